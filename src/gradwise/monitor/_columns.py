"""A watch's measurements packed into three tensors, for checkpoints.

``torch.save`` pickles a list of dicts object by object, and the weights-only loader
reads them back the same way. A watch that probes every step holds hundreds of thousands
of numbers after a few hundred steps (the default ``cnn1d``: 7 histograms of 30 bins and
about 9 records per step), and the Trainer checkpoints them every epoch: on that model,
580 steps into a run, one save took 100 ms as lists and one load 560 ms. A tensor is one
object whatever its length, but each costs ~40 us to save and ~100 us to load, so the
numbers are not one tensor per column either: every column is a slice of one float64,
one int64 or one bool tensor (:class:`Packer`), and the plain-data rest says which.
Values round-trip exactly: ints stay ints, floats (NaN and infinities included) stay
floats, None stays None; what fits no column (bools, mixed types) stays a list.

The Trainer saves a watch every epoch, and packing everything each time cost O(steps) per
save (35 ms 580 steps into an every-step watch). A watch only ever appends to its history,
records and histograms, so :class:`ChunkedPacker` packs only what was added since the
previous save and reuses the earlier saves' packed chunks; every ``MAX_CHUNKS`` chunks it
packs everything into one again, which keeps the objects in a checkpoint bounded.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gradwise.monitor._probes import Histogram

if TYPE_CHECKING:
    from gradwise.monitor._history import History

DTYPES = {"float64": np.float64, "int64": np.int64, "bool": np.bool_}


class Packer:
    """Collects columns of one dtype end to end; a column is known by ``[offset, size]``."""

    def __init__(self) -> None:
        self._parts: dict[str, list[Iterable[Any]]] = {dtype: [] for dtype in DTYPES}
        self._sizes = dict.fromkeys(DTYPES, 0)

    def add(self, dtype: str, values: Sequence[Any]) -> list[int]:
        offset = self._sizes[dtype]
        self._parts[dtype].append(values)
        self._sizes[dtype] += len(values)
        return [offset, len(values)]

    def add_rows(self, dtype: str, rows: Sequence[Sequence[Any]], width: int) -> list[int]:
        """Rows of ``width`` values each, as one column."""
        offset = self._sizes[dtype]
        self._parts[dtype].append(itertools.chain.from_iterable(rows))
        self._sizes[dtype] += len(rows) * width
        return [offset, len(rows) * width]

    def tensors(self) -> dict[str, torch.Tensor]:
        # numpy builds an array from Python numbers 3-4x faster than torch.tensor does.
        return {
            dtype: torch.from_numpy(
                np.fromiter(itertools.chain.from_iterable(parts), DTYPES[dtype], self._sizes[dtype])
            )
            for dtype, parts in self._parts.items()
        }


class Unpacker:
    """The inverse of :class:`Packer`: each buffer read into Python once, then sliced."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self._lists = {dtype: tensor.tolist() for dtype, tensor in tensors.items()}

    def take(self, dtype: str, where: Sequence[int]) -> list[Any]:
        offset, size = where
        return self._lists[dtype][offset : offset + size]


def pack_state(
    history: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    histograms: Mapping[str, Mapping[int, Mapping[str, Histogram]]],
) -> dict[str, Any]:
    """A watch's history (:meth:`History.to_dict`), records and histograms, packed."""
    packer = Packer()
    return {
        "history": {key: _pack_history_entry(value, packer) for key, value in history.items()},
        "records": _pack_records(records, packer),
        "histograms": {kind: _pack_histograms(h, packer) for kind, h in histograms.items()},
        "buffers": packer.tensors(),
    }


def unpack_state(
    data: Mapping[str, Any],
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, dict[int, dict[str, Histogram]]]]:
    """Inverse of :func:`pack_state`: (history dict, records, histograms)."""
    unpacker = Unpacker(data["buffers"])
    history = {key: _unpack_history_entry(v, unpacker) for key, v in data["history"].items()}
    records = _unpack_records(data["records"], unpacker)
    histograms = {kind: _unpack_histograms(h, unpacker) for kind, h in data["histograms"].items()}
    return history, records, histograms


# -- chunks: each save packs what was added since the previous one ------------------------

MAX_CHUNKS = 8


class ChunkedPacker:
    """Packs a watch's state for its checkpoints, each save only what is new.

    ``pack`` returns a list of chunks, each a :func:`pack_state` of the series' values,
    records and histograms appended between two saves (the history's plain entries, such
    as ``initial_loss``, in every chunk: the last one's count); :func:`unpack_chunks` joins
    them. Packing everything again (one chunk) happens when a save finds ``MAX_CHUNKS``
    chunks, and whenever what was saved is no longer a prefix of what is there: another
    history, records list or histograms dict, a series or table shorter than before
    (``reset`` after a load).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._chunks: list[dict[str, Any]] = []
        self._sources: tuple[Any, ...] = ()
        self._marks: _Marks = _Marks({}, 0, {})

    def pack(
        self,
        history: History,
        records: Sequence[Mapping[str, Any]],
        histograms: Mapping[str, Mapping[int, Mapping[str, Histogram]]],
    ) -> list[dict[str, Any]]:
        full = history.to_dict()
        sources = (history, records, histograms, *histograms.values())
        if (
            len(self._chunks) >= MAX_CHUNKS
            or len(sources) != len(self._sources)
            or any(a is not b for a, b in zip(sources, self._sources, strict=True))
            or not self._marks.is_prefix_of(full, records, histograms)
        ):
            self.reset()
            self._sources = sources
        marks = self._marks
        new_histograms = {
            kind: dict(itertools.islice(by_step.items(), marks.histograms.get(kind, 0), None))
            for kind, by_step in histograms.items()
        }
        self._chunks.append(
            pack_state(
                {key: marks.history_tail(key, value) for key, value in full.items()},
                records[marks.records :],
                new_histograms,
            )
        )
        self._marks = _Marks.of(full, records, histograms)
        return list(self._chunks)


@dataclasses.dataclass(frozen=True)
class _Marks:
    """How much of each series (``{key: length}``, tables ``{key: {name: length}}``), of
    the records and of each kind of histograms (steps) the chunks so far hold."""

    history: dict[str, Any]
    records: int
    histograms: dict[str, int]

    @classmethod
    def of(
        cls,
        full: Mapping[str, Any],
        records: Sequence[Any],
        histograms: Mapping[str, Mapping[int, Any]],
    ) -> _Marks:
        lengths: dict[str, Any] = {}
        for key, value in full.items():
            if _is_series(value):
                lengths[key] = len(value["steps"])
            elif _is_table(value):
                lengths[key] = {name: len(v["steps"]) for name, v in value.items()}
        return cls(lengths, len(records), {k: len(v) for k, v in histograms.items()})

    def is_prefix_of(
        self,
        full: Mapping[str, Any],
        records: Sequence[Any],
        histograms: Mapping[str, Mapping[int, Any]],
    ) -> bool:
        now = _Marks.of(full, records, histograms)
        if now.records < self.records or set(now.histograms) != set(self.histograms):
            return False
        if any(now.histograms[k] < n for k, n in self.histograms.items()):
            return False
        for key, length in self.history.items():
            current = now.history.get(key, 0 if isinstance(length, int) else {})
            if isinstance(length, int):
                if not isinstance(current, int) or current < length:
                    return False
            elif not isinstance(current, dict) or any(
                current.get(name, -1) < n for name, n in length.items()
            ):
                return False
        return True

    def history_tail(self, key: str, value: Any) -> Any:
        """The part of the history entry ``value`` that the chunks do not hold yet."""
        if _is_series(value):
            return _series_tail(value, self.history.get(key, 0))
        if _is_table(value):
            held = self.history.get(key, {})
            return {name: _series_tail(v, held.get(name, 0)) for name, v in value.items()}
        return value


def _series_tail(series: Mapping[str, list[Any]], start: int) -> dict[str, list[Any]]:
    return {"steps": series["steps"][start:], "values": series["values"][start:]}


def unpack_chunks(
    chunks: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, dict[int, dict[str, Histogram]]]]:
    """Inverse of :meth:`ChunkedPacker.pack`: (history dict, records, histograms)."""
    history: dict[str, Any] = {}
    records: list[dict[str, Any]] = []
    histograms: dict[str, dict[int, dict[str, Histogram]]] = {}
    for chunk in chunks:
        part_history, part_records, part_histograms = unpack_state(chunk)
        for key, value in part_history.items():
            if _is_series(value):
                _extend_series(history.setdefault(key, {"steps": [], "values": []}), value)
            elif _is_table(value):
                table = history.get(key)
                table = history[key] = table if isinstance(table, dict) else {}
                for name, series in value.items():
                    _extend_series(table.setdefault(name, {"steps": [], "values": []}), series)
            elif not (value == {} and _is_table(history.get(key))):
                history[key] = value  # a plain entry: the latest chunk's
        records.extend(part_records)
        for kind, by_step in part_histograms.items():
            histograms.setdefault(kind, {}).update(by_step)
    return history, records, histograms


def _extend_series(series: dict[str, list[Any]], tail: Mapping[str, list[Any]]) -> None:
    series["steps"].extend(tail["steps"])
    series["values"].extend(tail["values"])


# -- the history's series ------------------------------------------------------------------


def _is_series(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {"steps", "values"}


def _is_table(value: Any) -> bool:
    """A non-empty mapping of layer names to series."""
    return isinstance(value, Mapping) and bool(value) and all(map(_is_series, value.values()))


def _pack_history_entry(value: Any, packer: Packer) -> Any:
    """A series ``{"steps", "values"}`` as two columns; a table of them, each; the rest
    (numbers, the non-finite event) as it is."""
    if _is_series(value):
        return {
            "steps": packer.add("int64", value["steps"]),
            "values": packer.add("float64", [float(v) for v in value["values"]]),
        }
    if _is_table(value):
        return {"table": {name: _pack_history_entry(v, packer) for name, v in value.items()}}
    return {"plain": value}


def _unpack_history_entry(entry: Mapping[str, Any], unpacker: Unpacker) -> Any:
    if "plain" in entry:
        return entry["plain"]
    if "table" in entry:
        return {name: _unpack_history_entry(v, unpacker) for name, v in entry["table"].items()}
    return {
        "steps": unpacker.take("int64", entry["steps"]),
        "values": unpacker.take("float64", entry["values"]),
    }


# -- records ---------------------------------------------------------------------------


def _pack_records(records: Sequence[Mapping[str, Any]], packer: Packer) -> dict[str, Any]:
    """One group of columns per set of keys, and each record's group in order."""
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    position: dict[tuple[str, ...], int] = {}
    membership = []
    for record in records:
        keys = tuple(record)
        if keys not in groups:
            groups[keys], position[keys] = [], len(groups)
        groups[keys].append(record)
        membership.append(position[keys])
    return {
        "group": packer.add("int64", membership),
        "sizes": [len(rows) for rows in groups.values()],
        "groups": [
            {
                "keys": list(keys),
                "columns": [_pack_column([r[k] for r in rows], packer) for k in keys],
            }
            for keys, rows in groups.items()
        ],
    }


def _unpack_records(data: Mapping[str, Any], unpacker: Unpacker) -> list[dict[str, Any]]:
    rows = [
        iter(zip(*(_unpack_column(c, unpacker) for c in group["columns"]), strict=True))
        if group["keys"]
        else iter([()] * size)
        for group, size in zip(data["groups"], data["sizes"], strict=True)
    ]
    keys = [group["keys"] for group in data["groups"]]
    membership = unpacker.take("int64", data["group"])
    return [dict(zip(keys[index], next(rows[index]), strict=True)) for index in membership]


def _pack_column(values: list[Any], packer: Packer) -> dict[str, Any]:
    """One key's values: float64 or int64 when they allow it (None marked separately for
    floats), strings as an index into their distinct values, else a list."""
    kinds = {type(value) for value in values}
    if kinds <= {float, type(None)} and float in kinds:
        missing = [value is None for value in values]
        filled = [0.0 if value is None else value for value in values]
        return {
            "float": packer.add("float64", filled),
            "none": packer.add("bool", missing) if any(missing) else None,
        }
    if kinds == {int} and all(-(2**63) <= value < 2**63 for value in values):
        return {"int": packer.add("int64", values)}
    if kinds == {str}:
        distinct = list(dict.fromkeys(values))
        lookup = {text: position for position, text in enumerate(distinct)}
        return {"text": distinct, "index": packer.add("int64", [lookup[v] for v in values])}
    return {"list": list(values)}


def _unpack_column(column: Mapping[str, Any], unpacker: Unpacker) -> list[Any]:
    if "float" in column:
        values = unpacker.take("float64", column["float"])
        if column["none"] is None:
            return values
        missing = unpacker.take("bool", column["none"])
        return [None if gone else value for value, gone in zip(values, missing, strict=True)]
    if "int" in column:
        return unpacker.take("int64", column["int"])
    if "text" in column:
        distinct = column["text"]
        return [distinct[position] for position in unpacker.take("int64", column["index"])]
    return list(column["list"])


# -- histograms ------------------------------------------------------------------------


def _pack_histograms(by_step: Mapping[int, Mapping[str, Histogram]], packer: Packer) -> Any:
    """``{step: {layer: Histogram}}`` as one row per histogram, in order. A histogram with
    no finite value has no bins: its row is zeros, marked as not binned. (Histograms of
    unequal bin counts, which one watch does not make, are kept as lists.)"""
    rows = [(step, layer, h) for step, layers in by_step.items() for layer, h in layers.items()]
    widths = {len(h.counts) for _, _, h in rows if h.counts}
    if len(widths) > 1:
        return {"lists": [[step, layer, list(h)] for step, layer, h in rows]}
    width = min(widths, default=0)
    no_edges, no_counts = [0.0] * (width + 1), [0] * width
    return {
        "width": width,
        "step": packer.add("int64", [step for step, _, _ in rows]),
        "layer": _pack_column([layer for _, layer, _ in rows], packer),
        "binned": packer.add("bool", [bool(h.counts) for _, _, h in rows]),
        "edges": packer.add_rows("float64", [h.edges or no_edges for _, _, h in rows], width + 1),
        "counts": packer.add_rows("int64", [h.counts or no_counts for _, _, h in rows], width),
        "tallies": packer.add_rows(
            "int64", [(h.nan, h.posinf, h.neginf, h.values, h.total) for _, _, h in rows], 5
        ),
    }


def _unpack_histograms(
    data: Mapping[str, Any], unpacker: Unpacker
) -> dict[int, dict[str, Histogram]]:
    by_step: dict[int, dict[str, Histogram]] = {}
    if "lists" in data:
        for step, layer, values in data["lists"]:
            by_step.setdefault(step, {})[layer] = Histogram(*values)
        return by_step
    width = data["width"]
    edges = unpacker.take("float64", data["edges"])
    counts = unpacker.take("int64", data["counts"])
    tallies = unpacker.take("int64", data["tallies"])
    for row, (step, layer, binned) in enumerate(
        zip(
            unpacker.take("int64", data["step"]),
            _unpack_column(data["layer"], unpacker),
            unpacker.take("bool", data["binned"]),
            strict=True,
        )
    ):
        histogram = Histogram(
            edges[row * (width + 1) : (row + 1) * (width + 1)] if binned else [],
            counts[row * width : (row + 1) * width] if binned else [],
            *tallies[row * 5 : (row + 1) * 5],
        )
        by_step.setdefault(step, {})[layer] = histogram
    return by_step
