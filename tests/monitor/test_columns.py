"""A watch's checkpointed state, packed: exact round trips, a size in objects that does not
grow with the run, saves that pack only what is new, and the former lists-and-dicts state
still loads."""

from __future__ import annotations

import io
import math
import pickle
from typing import Any

import torch
from torch import nn

from gradwise import monitor
from gradwise.monitor import History
from gradwise.monitor._columns import (
    MAX_CHUNKS,
    ChunkedPacker,
    pack_state,
    unpack_chunks,
    unpack_state,
)
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


def small_watched_run(
    every: int = 1,
) -> tuple[nn.Module, torch.optim.Optimizer, tuple[torch.Tensor, torch.Tensor], Any]:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs = torch.randn(64, 8)
    targets = (inputs[:, 0] > 0).long()
    watch = monitor.watch(
        model, optimizer, monitor_data=(inputs, targets), every=every, cheap_every=1
    )
    return model, optimizer, (inputs, targets), watch


def assert_same_measurements(restored: Any, watch: Any) -> None:
    assert restored.num_steps == watch.num_steps
    assert restored.records() == watch.records()
    assert restored.histograms() == watch.histograms()
    assert restored.histograms("gradients") == watch.histograms("gradients")
    assert restored.history == watch.history


def test_a_run_checkpointed_every_step_holds_a_number_of_objects_that_does_not_grow() -> None:
    model, optimizer, batch, watch = small_watched_run()
    sizes = []
    for _ in range(40):
        watch.step(sgd_step(model, optimizer, batch))
        sizes.append(count_pickled_objects(watch.state_dict()))
    assert len(watch.histograms(kind="gradients")) == 40
    # Each save adds a chunk for its new measurements, and every MAX_CHUNKS chunks they are
    # packed into one again: the count cycles instead of growing (as lists of dicts each
    # step added about 500 objects).
    assert max(sizes[20:]) - max(sizes[:20]) < 100, sizes
    assert max(sizes) < 3 * MAX_CHUNKS * sizes[0], sizes
    restored = monitor.watch(model, optimizer, monitor_data=batch, every=1)
    restored.load_state_dict(through_a_checkpoint(watch.state_dict()))
    assert_same_measurements(restored, watch)


def test_each_save_packs_only_what_is_new_and_every_save_restores_the_whole_run() -> None:
    model, optimizer, batch, watch = small_watched_run(every=3)
    saved_chunks: list[Any] = []
    saved_records = 0
    for step in range(1, 2 * MAX_CHUNKS + 4):
        watch.step(sgd_step(model, optimizer, batch))
        if step % 5 == 0:
            watch.observe({"val_loss": 1.0 / step, "train_accuracy": 0.5}, step=step)
        state = watch.state_dict()
        chunks = state["packed_chunks"]
        if saved_chunks and len(chunks) > 1:
            # The earlier chunks are the previous save's own objects, not packed again.
            assert all(a is b for a, b in zip(chunks[:-1], saved_chunks, strict=False))
            # And the new one holds this step's measurements only.
            history, records, _ = unpack_state(chunks[-1])
            assert history["loss"] == {"steps": [step], "values": [watch.history.loss.last]}
            assert records == watch._records[saved_records:]
        assert 1 <= len(chunks) <= MAX_CHUNKS
        saved_chunks, saved_records = chunks, len(watch._records)
        restored = monitor.watch(model, optimizer, monitor_data=batch, every=3)
        restored.load_state_dict(through_a_checkpoint(state))
        assert_same_measurements(restored, watch)
    # A restored watch packs everything afresh once, then only what is new.
    restored = monitor.watch(model, optimizer, monitor_data=batch, every=3)
    restored.load_state_dict(through_a_checkpoint(watch.state_dict()))
    for _ in range(3):
        restored.step(sgd_step(model, optimizer, batch))
        again = monitor.watch(model, optimizer, monitor_data=batch, every=3)
        again.load_state_dict(through_a_checkpoint(restored.state_dict()))
        assert_same_measurements(again, restored)
    # Its first save packed everything; the three after it, one chunk each.
    assert len(restored.state_dict()["packed_chunks"]) == 4


def test_a_replaced_or_shortened_history_is_packed_again_in_full() -> None:
    model, optimizer, batch, watch = small_watched_run()
    for _ in range(4):
        watch.step(sgd_step(model, optimizer, batch))
        watch.state_dict()
    watch.history.loss.steps[:] = watch.history.loss.steps[:2]  # shorter than saved
    watch.history.loss.values[:] = watch.history.loss.values[:2]
    assert len(watch.state_dict()["packed_chunks"]) == 1
    watch.history = History.from_dict(watch.history.to_dict())  # same lengths, new object
    state = watch.state_dict()
    assert len(state["packed_chunks"]) == 1
    restored = monitor.watch(model, optimizer, monitor_data=batch, every=1)
    restored.load_state_dict(through_a_checkpoint(state))
    assert restored.history.loss.steps == [1, 2]
    assert_same_measurements(restored, watch)


def test_chunks_join_tables_that_gain_layers_and_keep_the_latest_plain_entries() -> None:
    packer = ChunkedPacker()
    history = History(initial_loss=2.0)
    history.loss.append(1, 1.5)
    records: list[dict[str, Any]] = [{"kind": "step", "step": 1}]
    histograms: dict[str, dict[int, dict[str, Histogram]]] = {"gradients": {}}
    packer.pack(history, records, histograms)
    history.loss.append(2, math.inf)
    history.layer(history.dead_fraction, "2").append(2, 0.25)  # a table's first layer
    history.nonfinite = {"step": 2, "what": "loss", "layer": None}
    records.append({"kind": "probe", "step": 2, "monitor_loss": 1.25})
    histograms["gradients"][2] = {"0.weight": Histogram([0.0, 1.0], [3], 0, 0, 0, 3, 3)}
    packer.pack(history, records, histograms)
    history.layer(history.dead_fraction, "4").append(3, 0.5)  # and a second, later
    history.layer(history.dead_fraction, "2").append(3, 0.0)
    chunks = packer.pack(history, records, histograms)
    assert len(chunks) == 3
    joined, joined_records, joined_histograms = unpack_chunks(through_a_checkpoint(chunks))
    assert History.from_dict(joined) == history
    assert joined_records == records
    assert joined_histograms == histograms


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
