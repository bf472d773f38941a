"""Warm starts and fine-tuning: load weights learnt on another task, freeze chosen layers.

The lectures' supervised pre-training advice: start from weights learnt on a similar task
instead of from a random draw. :func:`warm_start` copies every parameter and buffer whose
name and shape match from a run folder or a checkpoint file into a freshly initialized
model and reports what it loaded, skipped and left newly initialized; :func:`freeze` stops
chosen layers from learning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gradwise._validation import Boolean, OneOf, check

_CHECKPOINTS = OneOf(("last", "best"))
_SHOWN_NAMES = 6  # names quoted in an error message before "..."


@dataclass(frozen=True)
class SkippedEntry:
    """An entry of the source or of the model that :func:`warm_start` did not copy.

    Attributes:
        name: the state-dict name (``"0.weight"``, ``"1.running_mean"``).
        reason: ``"shape mismatch"``, ``"layer mismatch"`` (same shape, but another entry
            of its layer changed shape: a layer loads whole or not at all), ``"missing in
            source"`` (the model has it, the source does not) or ``"not in the model"``
            (the source has it, the model does not).
        source_shape: its shape in the source (None when missing there).
        model_shape: its shape in the model (None when missing there).
    """

    name: str
    reason: str
    source_shape: tuple[int, ...] | None
    model_shape: tuple[int, ...] | None

    def describe(self) -> str:
        """One line: the name, the reason, and the two shapes when they differ."""
        if self.reason == "shape mismatch":
            return (
                f"{self.name}: shape mismatch, source {_shape(self.source_shape)}, "
                f"model {_shape(self.model_shape)}"
            )
        if self.reason == "layer mismatch":
            layer = self.name.rpartition(".")[0] or "the model itself"
            return f"{self.name}: layer mismatch, another entry of layer {layer} changed shape"
        return f"{self.name}: {self.reason}"


@dataclass(frozen=True)
class WarmStartReport:
    """What :func:`warm_start` did, entry by entry (parameters and buffers).

    ``str(report)`` is a short table (counts and values per status, then one line per
    entry that was not loaded); :meth:`to_dict` is the JSON record that goes into a run's
    ``summary.json`` under ``warm_start``.

    Attributes:
        source: where the weights came from (the checkpoint file, or "a state dict").
        loaded: model entries copied from the source, in the model's order.
        initialized: model entries that keep the model's own (fresh) initialization:
            missing in the source or of another shape there.
        skipped: every entry not copied, of the model or of the source, with its reason.
        loaded_values: the number of scalars copied.
        initialized_values: the number of scalars left newly initialized.
        frozen: parameters frozen afterwards (a configured run's ``warm_start.freeze``).
    """

    source: str
    loaded: tuple[str, ...]
    initialized: tuple[str, ...]
    skipped: tuple[SkippedEntry, ...]
    loaded_values: int
    initialized_values: int
    frozen: tuple[str, ...] = ()

    def table(self) -> str:
        """The report as a short plain-text table."""
        unused = [entry for entry in self.skipped if entry.reason == "not in the model"]
        rows = [
            ("loaded", len(self.loaded), f"{self.loaded_values:,}"),
            ("newly initialized", len(self.initialized), f"{self.initialized_values:,}"),
            ("unused from source", len(unused), ""),
        ]
        if self.frozen:
            rows.append(("frozen parameters", len(self.frozen), ""))
        lines = [f"warm start from {self.source}", f"  {'':<20}{'entries':>8}  {'values':>12}"]
        lines += [f"  {label:<20}{count:>8}  {values:>12}" for label, count, values in rows]
        if self.skipped:
            lines.append("  skipped:")
            lines += [f"    {entry.describe()}" for entry in self.skipped]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record: the source, the three lists and the counts."""
        return {
            "source": self.source,
            "loaded": list(self.loaded),
            "initialized": list(self.initialized),
            "skipped": [
                {
                    "name": entry.name,
                    "reason": entry.reason,
                    "source_shape": _list_or_none(entry.source_shape),
                    "model_shape": _list_or_none(entry.model_shape),
                }
                for entry in self.skipped
            ],
            "loaded_values": self.loaded_values,
            "initialized_values": self.initialized_values,
            "frozen": list(self.frozen),
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> WarmStartReport:
        """The report back from :meth:`to_dict`'s record (a resumed run reads its summary)."""
        skipped = tuple(
            SkippedEntry(
                entry["name"],
                entry["reason"],
                _optional_shape(entry.get("source_shape")),
                _optional_shape(entry.get("model_shape")),
            )
            for entry in record["skipped"]
        )
        return cls(
            source=str(record["source"]),
            loaded=tuple(record["loaded"]),
            initialized=tuple(record["initialized"]),
            skipped=skipped,
            loaded_values=int(record["loaded_values"]),
            initialized_values=int(record["initialized_values"]),
            frozen=tuple(record.get("frozen", ())),
        )


def warm_start(
    model: nn.Module,
    source: str | PathLike[str] | Mapping[str, Tensor],
    *,
    checkpoint: str = "last",
    strict: bool = False,
) -> WarmStartReport:
    """Copy the weights of ``source`` into ``model`` wherever name and shape match.

    Every entry of ``model.state_dict()`` (parameters and buffers, such as batch-norm
    running statistics) whose name is in the source with the same shape is copied in
    place (cast to the model's dtype and device); every other entry keeps the model's own
    initialization, so a new read-out layer (another number of classes, another input
    size) starts fresh while the layers below it start from what the source learnt
    (Yosinski et al. 2014). Call it after initializing the model and before building the
    optimizer.

    Args:
        model: the model to initialize, built and initialized as for training.
        source: a run folder (its ``checkpoints/<checkpoint>.pt``), a checkpoint file
            (``.pt``: a gradwise checkpoint, whose ``"model"`` entry is read, or a
            ``state_dict`` saved with ``torch.save``), or a state dict. Files load with
            ``weights_only=True``.
        checkpoint: which checkpoint of a run folder, ``"last"`` or ``"best"``.
        strict: raise unless every entry of the model and of the source matches.

    Returns:
        A :class:`WarmStartReport` of what was loaded, skipped and newly initialized.

    Raises:
        ValueError: the source does not exist, holds no weights, or shares no parameter
            of the same name and shape with the model (the message shows the names of
            both); with ``strict``, any entry that does not match.

    Example:
        >>> import torch
        >>> from gradwise.models import mlp
        >>> from gradwise.train import warm_start
        >>> pretrained = mlp((64,), 10, depth=1, width=32)
        >>> model = mlp((64,), 3, depth=1, width=32)  # 3 classes: a new read-out
        >>> report = warm_start(model, pretrained.state_dict())
        >>> report.loaded, report.initialized
        (('1.weight', '1.bias'), ('3.weight', '3.bias'))
        >>> torch.equal(model[1].weight, pretrained[1].weight)
        True

    Reference:
        Yosinski, Clune, Bengio and Lipson, "How transferable are features in deep neural
        networks?", NeurIPS 2014.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            "The 'model' parameter of warm_start must be a torch.nn.Module. "
            f"Got {type(model).__name__} instead."
        )
    check("checkpoint", "warm_start", checkpoint, _CHECKPOINTS)
    check("strict", "warm_start", strict, Boolean())
    state, where = _read_source(source, checkpoint)
    target = model.state_dict()
    loaded, skipped = _match(state, target)
    parameters = {name for name, _ in model.named_parameters()}
    if parameters and not parameters.intersection(loaded):
        raise ValueError(_nothing_matches(where, state, target))
    if strict and skipped:
        listed = "; ".join(entry.describe() for entry in skipped)
        raise ValueError(
            f"warm_start(strict=True) needs every entry of {where} and of the model to match "
            f"by name and shape; {len(skipped)} do not: {listed}. Use strict=False to load "
            "the matching entries and keep the model's initialization for the others."
        )
    with torch.no_grad():
        for name in loaded:
            target[name].copy_(state[name])  # state_dict() tensors share the model's storage
    initialized = tuple(name for name in target if name not in loaded)
    return WarmStartReport(
        source=where,
        loaded=tuple(loaded),
        initialized=initialized,
        skipped=tuple(skipped),
        loaded_values=sum(target[name].numel() for name in loaded),
        initialized_values=sum(target[name].numel() for name in initialized),
    )


def freeze(
    model: nn.Module, patterns: str | Sequence[str], *, freeze_statistics: bool = False
) -> list[str]:
    """Stop the parameters whose names match ``patterns`` from learning.

    Matching parameters get ``requires_grad=False``: they receive no gradient, a
    configured run leaves them out of the optimizer (so no weight decay moves them
    either), and penalties skip them. Patterns are shell-style globs over the names of
    ``model.named_parameters()`` (``"0.*"``, ``"*.weight"``, ``"encoder.*"``).

    Batch-norm running statistics are buffers, not parameters: in training mode a frozen
    batch-norm layer still normalizes with each batch's statistics and keeps updating its
    running mean and variance. With ``freeze_statistics=True`` the normalization layers
    whose buffers the patterns match (``"1.*"`` matches ``"1.running_mean"``) behave as in
    evaluation mode in every forward pass: they normalize with their stored statistics
    and never update them (the "frozen batch norm" of detection and fine-tuning recipes).

    Args:
        model: the model.
        patterns: one glob or a list of globs; each must match at least one parameter.
        freeze_statistics: also fix the running statistics of the matched normalization
            layers, as described above.

    Returns:
        The names of the frozen parameters, in the model's order.

    Raises:
        ValueError: a pattern matches no parameter (the message lists the names).

    Example:
        >>> from gradwise.models import mlp
        >>> from gradwise.train import freeze
        >>> model = mlp((4,), 2, depth=2, width=8)
        >>> freeze(model, ["1.*"])
        ['1.weight', '1.bias']
        >>> model[1].weight.requires_grad, model[3].weight.requires_grad
        (False, True)

    Reference:
        Yosinski, Clune, Bengio and Lipson, "How transferable are features in deep neural
        networks?", NeurIPS 2014 (frozen versus fine-tuned transferred layers).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            "The 'model' parameter of freeze must be a torch.nn.Module. "
            f"Got {type(model).__name__} instead."
        )
    check("freeze_statistics", "freeze", freeze_statistics, Boolean())
    globs = check_patterns(patterns, "freeze")
    named = dict(model.named_parameters())
    frozen = select_parameters(list(named), globs, "freeze")
    for name in frozen:
        named[name].requires_grad_(False)
    if freeze_statistics:
        for module_name, module in model.named_modules():
            prefix = f"{module_name}." if module_name else ""
            statistics = getattr(module, "running_mean", None)
            if isinstance(statistics, Tensor) and any(
                fnmatchcase(prefix + "running_mean", pattern) for pattern in globs
            ):
                module.register_forward_pre_hook(_use_running_statistics)
    return frozen


def check_patterns(patterns: Any, owner: str, name: str = "patterns") -> list[str]:
    """``patterns`` as a list of globs: a string, or a non-empty list of strings."""
    if isinstance(patterns, str):
        return [patterns]
    if (
        isinstance(patterns, Sequence)
        and patterns
        and all(isinstance(pattern, str) for pattern in patterns)
    ):
        return list(patterns)
    raise ValueError(
        f"The '{name}' parameter of {owner} must be a glob pattern or a non-empty list of "
        f"them (e.g. ['0.*', '2.weight']). Got {patterns!r} instead."
    )


def select_parameters(names: Sequence[str], patterns: Sequence[str], owner: str) -> list[str]:
    """The names matched by any of ``patterns``, in order; each pattern must match one."""
    for pattern in patterns:
        if not any(fnmatchcase(name, pattern) for name in names):
            raise ValueError(
                f"The 'patterns' parameter of {owner} must match parameter names of the model "
                f"({quote_names(names)}). Got {pattern!r} instead, which matches none."
            )
    return [name for name in names if any(fnmatchcase(name, pattern) for pattern in patterns)]


# -- the pieces ----------------------------------------------------------------------------


def _use_running_statistics(module: nn.Module, inputs: Any) -> None:
    module.training = False  # normalize with the stored statistics and do not update them


def _read_source(
    source: str | PathLike[str] | Mapping[str, Tensor], checkpoint: str
) -> tuple[dict[str, Tensor], str]:
    """The source's state dict and a description of where it came from."""
    if isinstance(source, Mapping):
        return _tensors(source, "the state dict"), "a state dict"
    if not isinstance(source, str | PathLike):
        raise TypeError(
            "The 'source' parameter of warm_start must be a run folder, a .pt file or a state "
            f"dict. Got {type(source).__name__} instead."
        )
    path = Path(source)
    if not path.exists():
        raise ValueError(
            "The 'source' parameter of warm_start must be a run folder or a checkpoint file "
            f"(.pt). Got {str(source)!r} instead, which does not exist."
        )
    if path.is_dir():
        file = path / "checkpoints" / f"{checkpoint}.pt"
        if not file.is_file():
            raise ValueError(_no_checkpoint(path, checkpoint))
    elif checkpoint != "last":
        raise ValueError(
            f"The 'checkpoint' parameter of warm_start picks a file of a run folder, but "
            f"{path} is a file; leave checkpoint at 'last'. Got {checkpoint!r} instead."
        )
    else:
        file = path
    return _load_file(file), str(file)


def _no_checkpoint(path: Path, checkpoint: str) -> str:
    folder = path / "checkpoints"
    present = sorted(p.name for p in folder.glob("*.pt")) if folder.is_dir() else []
    if present:
        hint = f"it has {', '.join(present)}; pick one of those with checkpoint"
    elif folder.is_dir():
        hint = "it has no checkpoint yet; let the run finish an epoch first"
    else:
        hint = "it is not a gradwise run folder (no checkpoints/ in it)"
    return f"warm_start found no checkpoints/{checkpoint}.pt in {path}: {hint}."


def _load_file(file: Path) -> dict[str, Tensor]:
    try:
        contents = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same message
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise ValueError(
            f"warm_start could not read {file} as a checkpoint (loaded with "
            f"weights_only=True): {first_line}"
        ) from None
    if isinstance(contents, Mapping):
        for key in ("model", "state_dict"):  # a gradwise checkpoint, or a common layout
            if isinstance(contents.get(key), Mapping):
                return _tensors(contents[key], str(file))
        if contents and all(isinstance(value, Tensor) for value in contents.values()):
            return _tensors(contents, str(file))
    found = list(contents)[:_SHOWN_NAMES] if isinstance(contents, Mapping) else None
    raise ValueError(
        f"warm_start found no model weights in {file}: expected a gradwise checkpoint (with a "
        f"'model' entry) or a state dict of tensors. Got "
        f"{'a mapping with keys ' + repr(found) if found is not None else type(contents).__name__}"
        " instead."
    )


def _tensors(state: Mapping[Any, Any], where: str) -> dict[str, Tensor]:
    tensors = {str(k): v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise ValueError(f"warm_start found no tensors in {where}.")
    return tensors


def _match(
    source: Mapping[str, Tensor], target: Mapping[str, Tensor]
) -> tuple[list[str], list[SkippedEntry]]:
    # A layer loads whole or not at all: a read-out whose weight changed shape does not
    # keep the source's bias of the same shape (it would be a half-trained layer).
    mismatched_layers = {
        _layer(name)
        for name, tensor in target.items()
        if name in source and source[name].shape != tensor.shape
    }
    loaded: list[str] = []
    skipped: list[SkippedEntry] = []
    for name, tensor in target.items():
        other = source.get(name)
        shape = tuple(tensor.shape)
        if other is None:
            skipped.append(SkippedEntry(name, "missing in source", None, shape))
        elif other.shape != tensor.shape:
            skipped.append(SkippedEntry(name, "shape mismatch", tuple(other.shape), shape))
        elif _layer(name) in mismatched_layers:
            skipped.append(SkippedEntry(name, "layer mismatch", shape, shape))
        else:
            loaded.append(name)
    for name, tensor in source.items():
        if name not in target:
            skipped.append(SkippedEntry(name, "not in the model", tuple(tensor.shape), None))
    return loaded, skipped


def _layer(name: str) -> str:
    return name.rpartition(".")[0]


def _nothing_matches(where: str, source: Mapping[str, Tensor], target: Mapping[str, Tensor]) -> str:
    differing = [
        name for name in target if name in source and source[name].shape != target[name].shape
    ]
    if differing:
        example = differing[0]
        why = (
            f"the names agree but the layers differ in shape (e.g. {example!r}: source "
            f"{_shape(tuple(source[example].shape))}, model {_shape(tuple(target[example].shape))}"
            "), so the source was trained with another architecture, width or depth"
        )
    else:
        why = (
            "no name matches: build the model the source was trained with (same builder and "
            "layer names), or rename the source's keys"
        )
    return (
        f"warm_start found no parameter of the model in {where} with the same name and shape; "
        f"{why}. The source's names look like {quote_names(list(source))}; the model's look "
        f"like {quote_names(list(target))}."
    )


def quote_names(names: Sequence[str]) -> str:
    """The first few names, quoted, and how many there are in all."""
    shown = ", ".join(repr(name) for name in names[:_SHOWN_NAMES])
    more = len(names) - _SHOWN_NAMES
    return f"{shown}, ... ({len(names)} in all)" if more > 0 else shown


def _shape(shape: tuple[int, ...] | None) -> str:
    if shape is None:
        return "-"
    return "(" + ", ".join(str(size) for size in shape) + ")" if shape else "scalar"


def _list_or_none(shape: tuple[int, ...] | None) -> list[int] | None:
    return None if shape is None else list(shape)


def _optional_shape(shape: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if shape is None else tuple(int(size) for size in shape)
