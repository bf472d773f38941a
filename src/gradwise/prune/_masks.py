"""Pruning masks keyed by parameter name, which parameters are prunable, magnitude pruning."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, final

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from gradwise._validation import UNIT_INTERVAL, Boolean, OneOf, Satisfies, check
from gradwise.runs import replace_atomically

_SCOPES = OneOf(("global", "layer"))
_NAMES = Satisfies(
    lambda value: (
        value is None
        or (
            isinstance(value, Sequence)
            and not isinstance(value, str)
            and all(isinstance(name, str) for name in value)
        )
    ),
    "None or a list of parameter names or glob patterns",
)


@final
class Masks(Mapping[str, Tensor]):
    """Boolean masks of pruned weights, keyed by parameter name: ``True`` keeps a weight.

    A mapping ``name -> bool tensor`` where ``name`` is the parameter's name in
    ``model.named_parameters()`` (``"1.weight"``) and the tensor has the parameter's shape.
    Parameters without a mask are not pruned. A ``Masks`` never changes: the masks are
    copied on construction, and ``masks[name]`` (so ``values()`` and ``items()``) and
    :meth:`state_dict` hand out copies, so changing what they return in place leaves the
    masks, and the pruning that enforces them, as they were. (Torch has no read-only
    tensors; a bool mask costs one byte per weight to copy.) Masks are equal when they
    hold the same names with the same shapes and values, on any devices.

    Args:
        masks: a mapping of parameter names to boolean tensors.

    Example:
        >>> import torch
        >>> from gradwise.prune import Masks
        >>> masks = Masks({"0.weight": torch.tensor([[True, False], [True, True]])})
        >>> masks.fraction_remaining(), masks.sparsity()
        (0.75, 0.25)
    """

    def __init__(self, masks: Mapping[str, Tensor]) -> None:
        problem = _mask_mapping_problem(masks)
        if problem is not None:
            # The entry that is wrong, not the whole mapping: its repr prints every tensor.
            raise ValueError(
                f"The 'masks' parameter of Masks must be {_MASK_MAPPING}. Got {problem} instead."
            )
        source = masks._masks if isinstance(masks, Masks) else masks  # no copy of a copy
        self._masks: dict[str, Tensor] = {
            name: mask.detach().clone() for name, mask in source.items()
        }

    def __getitem__(self, name: str) -> Tensor:
        return self._masks[name].clone()

    def __contains__(self, name: object) -> bool:
        return name in self._masks  # Mapping's would copy the mask to answer

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __repr__(self) -> str:
        return f"Masks({len(self)} tensors, {self.fraction_remaining():.2%} of weights remaining)"

    def __eq__(self, other: object) -> bool:
        """The same masks: the same names, each with the same shape and values, wherever
        the tensors are. A plain mapping compares as the masks it holds (anything that is
        not a mapping of bool tensors is unequal); Mapping's own ``==`` would compare
        tensors as truth values, which torch refuses."""
        if not isinstance(other, Mapping):
            return NotImplemented
        if not isinstance(other, Masks):
            if not _is_mask_mapping(other):
                return False
            return same_tensors(self._masks, other)
        return same_tensors(self._masks, other._masks)

    # Masks are never changed, but equal masks must hash alike, and tensors hash by id.
    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def dense(cls, parameters: Mapping[str, Tensor]) -> Masks:
        """All-``True`` masks (nothing pruned yet) for ``{name: parameter}``."""
        return cls({name: torch.ones_like(p, dtype=torch.bool) for name, p in parameters.items()})

    def num_weights(self) -> int:
        """The number of masked entries, pruned or not."""
        return sum(mask.numel() for mask in self._masks.values())

    def num_remaining(self) -> int:
        """The number of entries that are kept (mask ``True``)."""
        return sum(int(mask.sum()) for mask in self._masks.values())

    def fraction_remaining(self) -> float:
        """Kept entries over all masked entries (1.0 for no masks)."""
        total = self.num_weights()
        return self.num_remaining() / total if total else 1.0

    def sparsity(self) -> float:
        """Pruned entries over all masked entries: ``1 - fraction_remaining()``."""
        return 1.0 - self.fraction_remaining()

    def report(self) -> dict[str, Any]:
        """Per tensor and in total: size, remaining weights, sparsity (JSON-ready).

        ``{"layers": [{"name", "shape", "size", "remaining", "sparsity"}, ...],
        "total": {"size", "remaining", "sparsity"}}``.
        """
        layers = []
        for name, mask in self._masks.items():
            size, remaining = mask.numel(), int(mask.sum())
            layers.append({
                "name": name,
                "shape": list(mask.shape),
                "size": size,
                "remaining": remaining,
                "sparsity": 1.0 - remaining / size if size else 0.0,
            })  # fmt: skip
        total = {
            "size": self.num_weights(),
            "remaining": self.num_remaining(),
            "sparsity": self.sparsity(),
        }
        return {"layers": layers, "total": total}

    def state_dict(self) -> dict[str, Tensor]:
        """Plain CPU bool tensors by name (what checkpoints and ticket files hold): copies."""
        return {name: mask.to("cpu", copy=True) for name, mask in self._masks.items()}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the masks with ``torch.save`` (loadable with ``weights_only=True``).

        The file is replaced atomically (:func:`gradwise.runs.replace_atomically`): a crash
        mid-write leaves the old file or none, never truncated masks.
        """
        contents = self.state_dict()
        replace_atomically(Path(path), lambda file: torch.save(contents, file))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Masks:
        """Read masks written by :meth:`save`; ValueError if the file does not hold masks."""
        contents = read_tensor_file(path, "a masks file (Masks.save writes them)")
        if isinstance(contents, dict) and contents.get("format") == TICKET_FORMAT:
            raise ValueError(
                f"{os.fspath(path)} is a ticket file, not a masks file; read its masks with "
                "gradwise.prune.Ticket.load(path).masks."
            )
        return cls(contents)

    def check_fits(self, model: nn.Module, owner: str = "Masks") -> dict[str, nn.Parameter]:
        """The masked parameters of ``model`` by name; ValueError if a mask does not fit."""
        parameters = dict(model.named_parameters())
        for name, mask in self._masks.items():
            if name not in parameters:
                known = ", ".join(sorted(parameters)[:8]) + (", ..." if len(parameters) > 8 else "")
                raise ValueError(
                    f"The masks of {owner} must name parameters of the model. Got {name!r}, "
                    f"which it does not have (it has {known})."
                )
            if tuple(mask.shape) != tuple(parameters[name].shape):
                raise ValueError(
                    f"The mask of {name!r} in {owner} must have the parameter's shape "
                    f"{tuple(parameters[name].shape)}. Got {tuple(mask.shape)} instead."
                )
        return {name: parameters[name] for name in self._masks}

    @torch.no_grad()
    def apply_(self, model: nn.Module) -> None:
        """Set the pruned weights of ``model`` to zero, in place."""
        for name, parameter in self.check_fits(model, "Masks.apply_").items():
            parameter.masked_fill_(~self._masks[name].to(parameter.device), 0.0)


def same_tensors(mine: Mapping[str, Tensor], theirs: Mapping[str, Tensor]) -> bool:
    """Whether two mappings hold the same names, each with the same dtype, shape and
    values (``theirs`` moved to ``mine``'s device to compare)."""
    if set(mine) != set(theirs):
        return False
    for name, tensor in mine.items():
        other = theirs[name]
        if other.dtype != tensor.dtype or other.shape != tensor.shape:
            return False
        if not torch.equal(tensor, other.to(tensor.device)):
            return False
    return True


#: What Ticket.save writes under "format"; here so that Masks.load can recognize one.
TICKET_FORMAT = "gradwise.prune.Ticket/1"


def read_tensor_file(path: str | os.PathLike[str], expected: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; ValueError naming the file and
    what was ``expected`` if it is not a file of tensors (an empty file, a YAML file and a
    pickled module raise EOFError, IndexError and UnpicklingError from inside torch)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise  # a missing or unreadable file says so itself
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"{os.fspath(path)} is not {expected}: torch.load(weights_only=True) cannot read "
            f"it ({type(error).__name__}{': ' + reason[:200] if reason else ''})."
        ) from error


def _is_mask_mapping(value: Any) -> bool:
    return _mask_mapping_problem(value) is None


def _mask_mapping_problem(value: Any) -> str | None:
    """None for a valid mapping of masks, else a short description of what is wrong."""
    if isinstance(value, Masks):
        return None  # checked when it was made
    if not isinstance(value, Mapping):
        return f"a {type(value).__name__}"
    for name, mask in value.items():
        if not isinstance(name, str):
            return f"the key {name!r} ({type(name).__name__})"
        if not isinstance(mask, Tensor):
            return f"{name!r}: a {type(mask).__name__}"
        if mask.dtype != torch.bool or mask.ndim < 1:
            dtype = str(mask.dtype).removeprefix("torch.")
            return f"{name!r}: a {dtype} tensor of shape {tuple(mask.shape)}"
    return None


_MASK_MAPPING = "a mapping of parameter names to bool tensors with at least one dimension"


def _nothing_to_prune(names: Sequence[str] | None, include_output: bool) -> str:
    if names is not None:
        return (
            "The 'names' parameter of magnitude_masks must name at least one parameter to "
            "prune. Got an empty list instead."
        )
    if include_output:
        return (
            "The 'model' parameter of magnitude_masks must have a Linear or convolution "
            "layer to prune. Got a model with none; choose the parameters with names=[...]."
        )
    return (
        "The 'model' parameter of magnitude_masks must have a Linear or convolution layer "
        "before its output layer (the last one), whose weights are pruned by default. Got a "
        "model with none; pass include_output=True to prune the output layer, or choose the "
        "parameters with names=[...]."
    )


def prunable_parameters(
    model: nn.Module,
    *,
    include_biases: bool = False,
    include_output: bool = False,
    names: Sequence[str] | None = None,
) -> dict[str, nn.Parameter]:
    """The parameters to prune, by name: Linear and Conv weights, by default.

    The output layer (the last ``nn.Linear`` or convolution in module order) and biases
    are left out unless asked for: pruning the read-out removes whole class scores' inputs
    and biases are few (Han et al. 2015 and Frankle & Carbin 2019 prune weights only, the
    output layer at a lower rate). ``names`` instead chooses explicitly: every parameter
    whose name matches one of the globs (``fnmatch``, e.g. ``"1.weight"`` or
    ``"*.weight"``), whatever its kind.

    Args:
        model: the model (for a DistributedDataParallel model, pass ``model.module``).
        include_biases: also the biases of those layers.
        include_output: also the output layer.
        names: glob patterns of parameter names; each must match at least one. When given,
            ``include_biases`` and ``include_output`` must stay False.

    Example:
        >>> import torch
        >>> from gradwise.prune import prunable_parameters
        >>> model = torch.nn.Sequential(
        ...     torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)
        ... )
        >>> list(prunable_parameters(model))
        ['0.weight']
        >>> list(prunable_parameters(model, include_output=True, include_biases=True))
        ['0.weight', '0.bias', '2.weight', '2.bias']
    """
    owner = "prunable_parameters"
    check("model", owner, model, Satisfies(lambda v: isinstance(v, nn.Module), "an nn.Module"))
    check("include_biases", owner, include_biases, Boolean())
    check("include_output", owner, include_output, Boolean())
    check("names", owner, names, _NAMES)
    if names is not None:
        if include_biases or include_output:
            raise ValueError(
                "The 'names' parameter of prunable_parameters chooses the parameters "
                "explicitly; leave include_biases and include_output False with it."
            )
        return _matching(model, names)
    layers = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear | nn.modules.conv._ConvNd)
    ]
    if not include_output:
        layers = layers[:-1]
    # A tied parameter (two layers sharing one weight) goes by its one name in
    # named_parameters(), which masks are keyed by, and is ranked once.
    canonical = {id(p): name for name, p in model.named_parameters()}
    chosen: dict[str, nn.Parameter] = {}
    for _, module in layers:
        kinds = ("weight", "bias") if include_biases else ("weight",)
        for kind in kinds:
            parameter = getattr(module, kind, None)
            if isinstance(parameter, nn.Parameter):
                chosen[canonical[id(parameter)]] = parameter
    return chosen


def _matching(model: nn.Module, patterns: Sequence[str]) -> dict[str, nn.Parameter]:
    parameters = dict(model.named_parameters())
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in parameters):
            raise ValueError(
                f"The 'names' parameter of prunable_parameters must hold names or globs of "
                f"the model's parameters ({', '.join(parameters)}). Got {pattern!r}, which "
                "matches none."
            )
    return {
        name: p
        for name, p in parameters.items()
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
    }


@torch.no_grad()
def magnitude_masks(
    model: nn.Module,
    amount: float,
    *,
    scope: str = "global",
    masks: Mapping[str, Tensor] | None = None,
    include_biases: bool = False,
    include_output: bool = False,
    names: Sequence[str] | None = None,
) -> Masks:
    r"""Prune the smallest-magnitude ``amount`` of the remaining weights (unstructured).

    Among the chosen tensors' entries still kept by ``masks`` (all of them, without
    ``masks``), the :math:`k = \operatorname{round}(\text{amount} \cdot n)` entries with the
    smallest :math:`|w|` are pruned, where :math:`n` counts the kept entries of all chosen
    tensors together (``scope="global"``) or of each tensor on its own (``scope="layer"``,
    each tensor losing the same fraction). Pruning a fraction :math:`p` of the remaining
    weights in each of :math:`n` rounds leaves :math:`(1-p)^n` of them.

    The ranking is torch's own ``torch.nn.utils.prune.L1Unstructured.compute_mask`` (a
    ``topk`` of :math:`|w|`), run on the kept entries only; its reparametrization
    (``weight_orig`` and a forward pre-hook) is not used: see :func:`attach_masks`.

    Args:
        model: the trained model whose weight magnitudes decide.
        amount: the fraction of the remaining weights to prune, a float in [0, 1].
        scope: "global" (one ranking over all chosen tensors) or "layer" (per tensor).
        masks: the masks so far (from an earlier round); tensors they cover that are not
            chosen now are carried over unchanged.
        include_biases, include_output, names: which tensors, as in
            :func:`prunable_parameters`.

    Returns:
        The new :class:`Masks`: the earlier ones with the newly pruned entries set False.

    Reference:
        Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient Neural
        Networks", NeurIPS 2015; Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding
        Sparse, Trainable Neural Networks", ICLR 2019 (layer-wise and global pruning).

    Example:
        >>> import torch
        >>> from gradwise.prune import magnitude_masks
        >>> layer = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
        >>> with torch.no_grad():
        ...     _ = layer[0].weight.copy_(torch.tensor([[0.1, -2.0], [0.3, -0.05]]))
        >>> masks = magnitude_masks(layer, 0.5)
        >>> masks["0.weight"]
        tensor([[False,  True],
                [ True, False]])
    """
    check("amount", "magnitude_masks", amount, UNIT_INTERVAL)
    check("scope", "magnitude_masks", scope, _SCOPES)
    chosen = prunable_parameters(
        model, include_biases=include_biases, include_output=include_output, names=names
    )
    if not chosen:
        raise ValueError(_nothing_to_prune(names, include_output))
    before = Masks(masks if masks is not None else {})
    before.check_fits(model, "magnitude_masks")
    current = {
        name: before[name].to(p.device) if name in before else torch.ones_like(p, dtype=torch.bool)
        for name, p in chosen.items()
    }
    groups = [list(chosen)] if scope == "global" else [[name] for name in chosen]
    for group in groups:
        kept = torch.cat([chosen[name].detach()[current[name]].flatten() for name in group])
        if kept.numel() == 0:
            continue
        survivors = torch_prune.L1Unstructured(amount=float(amount)).compute_mask(
            kept, torch.ones_like(kept, dtype=torch.bool)
        )
        start = 0
        for name in group:
            count = int(current[name].sum())
            updated = current[name].clone()
            updated[current[name]] = survivors[start : start + count]
            current[name] = updated
            start += count
    return Masks({**before, **{name: mask.cpu() for name, mask in current.items()}})
