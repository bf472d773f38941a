"""A watch's checkpointed state, packed: exact round trips, a size in objects that does not
grow with the run, and the former lists-and-dicts state still loads."""

from __future__ import annotations

import io
import math
import pickle
from typing import Any

import torch
from torch import nn

from gradwise import monitor
from gradwise.monitor._columns import pack_state, unpack_state
from gradwise.monitor._probes import Histogram
from tests.monitor.setups import sgd_step


def round_trip(records: Any = (), histograms: Any = None, history: Any = None) -> Any:
    """Pack, save, load with weights_only and unpack."""
    packed = pack_state(history or {}, list(records), histograms or {})
    return unpack_state(through_a_checkpoint(packed))


def through_a_checkpoint(state: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_records_round_trip_with_their_types_order_and_missing_values() -> None:
    records = [
        {"kind": "step", "step": 1, "loss": 2.5},
        {"kind": "activation", "step": 1, "layer": "2", "dead": 0.25, "saturated": None},
        {"kind": "step", "step": 2, "loss": math.nan},
        {"kind": "activation", "step": 2, "layer": "4", "dead": None, "saturated": 0.5},
        {"kind": "step", "step": 3, "loss": math.inf},
        {"kind": "epoch", "step": 3, "val_accuracy": 1, "note": None, "flag": True},
        {"kind": "epoch", "step": 6, "val_accuracy": 0.5, "note": "x", "flag": False},
        {"kind": "step", "step": 2**62, "loss": -0.0},
        {},
    ]
    _, restored, _ = round_trip(records)
    assert len(restored) == len(records)
    for got, want in zip(restored, records, strict=True):
        assert list(got) == list(want)  # the keys in their order
        for key in want:
            value, expected = got[key], want[key]
            assert type(value) is type(expected), (key, value, expected)
            if isinstance(expected, float) and math.isnan(expected):
                assert math.isnan(value)
            else:
                assert value == expected
                if isinstance(expected, float):
                    assert math.copysign(1.0, value) == math.copysign(1.0, expected)
    assert round_trip([]) == ({}, [], {})


def test_histograms_round_trip_including_unbinned_and_unequal_ones() -> None:
    binned = Histogram([0.0, 0.5, 1.0], [3, 1], 0, 0, 0, 4, 4)
    unbinned = Histogram([], [], 2, 1, 0, 0, 3)  # nothing finite
    by_step = {0: {"2": binned, "4": unbinned}, 7: {"2": binned._replace(counts=[1, 3])}}
    restored = round_trip(histograms={"activations": by_step})[2]["activations"]
    assert restored == by_step
    assert list(restored) == [0, 7]
    assert list(restored[0]) == ["2", "4"]
    ragged = {**by_step, 9: {"2": Histogram([0.0, 1.0, 2.0, 3.0], [1, 1, 1], 0, 0, 0, 3, 3)}}
    assert round_trip(histograms={"gradients": ragged})[2] == {"gradients": ragged}
    assert round_trip(histograms={"gradients": {}})[2] == {"gradients": {}}


def test_the_history_round_trips_series_tables_and_plain_entries() -> None:
    history = {
        "loss": {"steps": [1, 2, 3], "values": [2.5, math.nan, -math.inf]},
        "update_ratio": {
            "0.weight": {"steps": [1], "values": [1e-3]},
            "2.weight": {"steps": [], "values": []},
        },
        "dead_fraction": {},
        "initial_loss": 2.3,
        "chance_loss": None,
        "nonfinite": {"step": 3, "what": "loss", "layer": None},
    }
    restored = round_trip(history=history)[0]
    assert restored.keys() == history.keys()
    assert restored["loss"]["steps"] == [1, 2, 3]
    assert restored["loss"]["values"][0] == 2.5
    assert math.isnan(restored["loss"]["values"][1])
    assert restored["loss"]["values"][2] == -math.inf
    for key in ("update_ratio", "dead_fraction", "initial_loss", "chance_loss", "nonfinite"):
        assert restored[key] == history[key]


def count_pickled_objects(state: Any) -> int:
    count = 0

    class Counting(pickle.Pickler):
        def persistent_id(self, obj: Any) -> None:
            nonlocal count
            count += 1
            # torch.save treats tensors' storages this way; here a tensor is one object.
            return "tensor" if isinstance(obj, torch.Tensor) else None

    Counting(io.BytesIO()).dump(state)
    return count


def test_a_watched_run_checkpoints_in_a_number_of_objects_that_does_not_grow_with_it() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs = torch.randn(64, 8)
    targets = (inputs[:, 0] > 0).long()
    watch = monitor.watch(model, optimizer, monitor_data=(inputs, targets), every=1, cheap_every=1)
    sizes = {}
    for step in range(1, 41):
        watch.step(sgd_step(model, optimizer, (inputs, targets)))
        if step in (10, 40):
            sizes[step] = count_pickled_objects(watch.state_dict())
    assert len(watch.histograms(kind="gradients")) == 40
    # Four times the steps, the same objects (a findings entry or two may come and go);
    # as lists of dicts each step added about 500.
    assert abs(sizes[40] - sizes[10]) < 100, sizes
    restored = monitor.watch(model, optimizer, monitor_data=(inputs, targets), every=1)
    restored.load_state_dict(through_a_checkpoint(watch.state_dict()))
    assert restored.records() == watch.records()
    assert restored.histograms() == watch.histograms()
    assert restored.histograms("gradients") == watch.histograms("gradients")
    assert restored.history == watch.history


def test_the_former_lists_of_dicts_state_still_loads() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs = torch.randn(32, 8)
    targets = (inputs[:, 0] > 0).long()
    watch = monitor.watch(model, optimizer, monitor_data=(inputs, targets), every=2)
    for _ in range(4):
        watch.step(sgd_step(model, optimizer, (inputs, targets)))
    former = {  # what state_dict returned before the columns
        "step": watch.num_steps,
        "history": watch.history.to_dict(),
        "records": [dict(r) for r in watch._records],
        "histograms": {
            kind: {
                step: {layer: list(h) for layer, h in layers.items()}
                for step, layers in watch.histograms(kind).items()  # type: ignore[arg-type]
            }
            for kind in ("activations", "gradients")
        },
        "findings": [finding.to_dict() for finding in watch.findings()],
    }
    restored = monitor.watch(model, optimizer, monitor_data=(inputs, targets), every=2)
    restored.load_state_dict(through_a_checkpoint(former))
    assert restored.records() == watch.records()
    assert restored.histograms() == watch.histograms()
    assert restored.histograms("gradients") == watch.histograms("gradients")
    assert restored.history == watch.history
