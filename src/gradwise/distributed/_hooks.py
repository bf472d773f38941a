"""Gradient compression for DistributedDataParallel, as DDP communication hooks.

No ``from __future__ import annotations`` in this module: ``register_comm_hook`` compares
a hook's annotations with the objects ``dist.GradBucket`` and ``Future[torch.Tensor]``,
and string annotations fail that check.

Every collective is issued from the hook itself (the autograd thread), in bucket order;
``then`` callbacks only decode. A collective issued from a callback could reach the
process group in a different order on different ranks (gloo completes futures on its own
threads), and collectives must be issued in the same order everywhere.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

# The same class as torch.distributed.GradBucket, which mypy cannot see (it is imported
# under a runtime check in torch.distributed).
from torch._C._distributed_c10d import GradBucket
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as powersgd
from torch.futures import Future
from torch.nn.parallel import DistributedDataParallel

from gradwise._validation import (
    HALF_OPEN_UNIT_INTERVAL,
    NON_NEGATIVE,
    POSITIVE_INT,
    Boolean,
    Constraint,
    Interval,
    OneOf,
    check,
    check_all,
    invalid_value_error,
)
from gradwise.distributed._bits import pack_bits, unpack_bits
from gradwise.distributed._codec import (
    Chunks,
    Segments,
    chunk_layout,
    decode,
    encode,
    from_payload,
    segment_scales,
    tensor_segments,
    to_payload,
)
from gradwise.distributed._world import all_gather_flat

#: The names :func:`register_compression` accepts.
COMPRESSIONS: tuple[str, ...] = (
    "none",
    "fp16",
    "powersgd",
    "one_bit",
    "sign_majority",
    "one_bit_two_phase",
)

#: Options per compression (keyword arguments of register_compression), as constraints.
#: PowerSGD's are torch's PowerSGDState arguments; start_powerSGD_iter is warmup_steps.
COMPRESSION_OPTIONS: dict[str, dict[str, Constraint]] = {
    "powersgd": {
        "matrix_approximation_rank": POSITIVE_INT,
        "min_compression_rate": NON_NEGATIVE,
        "orthogonalization_epsilon": NON_NEGATIVE,
        # numpy's RandomState, which torch seeds with it, takes 32 bits.
        "random_seed": Interval(low=0.0, high=2.0**32 - 1, kind="int"),
        "use_error_feedback": Boolean(),
        "warm_start": Boolean(),
        "batch_tensors_with_same_shape": Boolean(),
    },
    # error_feedback is off only to show what error feedback buys
    # (benchmarks/compression.py): a plain scaled sign loses the quantization error for good.
    "one_bit": {
        "error_feedback": Boolean(),
        "granularity": OneOf(("tensor", "row")),
        "two_level": Boolean(),
        "momentum": HALF_OPEN_UNIT_INTERVAL,
    },
    "one_bit_two_phase": {
        "granularity": OneOf(("tensor", "row")),
        "two_level": Boolean(),
        "momentum": HALF_OPEN_UNIT_INTERVAL,
    },
}

# DDP rebuilds its buckets after the first iteration; torch's PowerSGD keys its memories
# by bucket index and needs two plain steps. gradwise's hooks key theirs by parameter
# name and would not, but one warmup rule for every hook is simpler to configure.
_WARMUP_STEPS = Interval(low=2.0, kind="int")


#: The memories of a PowerSGD bucket in a saved state.
POWERSGD_MEMORIES = ("error", "p", "q")


class CompressionState:
    r"""The state of a registered compression hook on one rank.

    Built and returned by :func:`register_compression`; the hook updates it on every
    backward pass. Attributes:

    - ``name``: the compression, one of :data:`COMPRESSIONS`.
    - ``warmup_steps``: backward passes with a plain allreduce (DDP's, in the gradients'
      dtype) before compressing.
    - ``step``: backward passes whose gradients the hook has communicated.
    - ``bytes_sent``: cumulative gradient bytes this rank has handed to collectives (see
      below).
    - ``worker_error``: error-feedback memory per parameter name (``one_bit``,
      ``one_bit_two_phase``): what compression dropped from this rank's gradient, added
      back next step. A flat tensor per parameter.
    - ``worker_momentum``: with the ``momentum`` option, this rank's momentum per parameter
      name (what the hook compresses instead of the gradient), else empty.
    - ``error_feedback``, ``granularity``, ``two_level``, ``momentum``: the options (see
      :func:`register_compression`; with their defaults, ``one_bit`` and
      ``one_bit_two_phase`` have two scales per row).
    - ``server_error``: ``one_bit_two_phase`` only: the error memory of the chunk this rank
      averages (chunk ``rank`` of each parameter, :math:`\lceil d/W \rceil` elements; with
      ``granularity="row"``, chunk ``rank`` of each of its rows, one after the other).
    - ``powersgd_state``: torch's ``PowerSGDState`` (``powersgd`` only), else None.

    Counting convention for ``bytes_sent``: the size in bytes of the tensor this rank
    passes to each collective (an allreduce of :math:`n` float32 counts :math:`4n`; an
    all-gather counts this rank's contribution; an all-to-all its whole input). Real
    network traffic depends on the algorithm (a ring allreduce sends :math:`2(W-1)/W`
    times its input; a ring all-gather :math:`W-1` times), see docs/distributed.md. The
    warmup steps are counted the same way, so ``bytes_sent`` after the warmup compared
    with :math:`4n` per step is the compression ratio against fp32 allreduce.

    ``state_dict()`` and ``load_state_dict()`` hold only tensors, numbers, strings, lists
    and dicts (``torch.load(..., weights_only=True)`` reads them). The state is per rank:
    each rank's error memory is its own. ``state_dict()``'s tensors are copies, so a saved
    state stays as it was while training goes on (torch's PowerSGD updates its P and Q
    memories in place).

    Example:
        >>> import os, tempfile, torch, torch.distributed as dist
        >>> from torch.nn.parallel import DistributedDataParallel
        >>> from gradwise.distributed import register_compression
        >>> init = "file://" + os.path.join(tempfile.mkdtemp(), "init")
        >>> dist.init_process_group("gloo", init_method=init, rank=0, world_size=1)
        >>> model = DistributedDataParallel(torch.nn.Linear(4, 2))
        >>> state = register_compression(model, "one_bit")
        >>> for _ in range(3):
        ...     model(torch.randn(8, 4)).square().mean().backward()
        >>> state.step, state.bytes_sent  # 2 x 40 (fp32 allreduce) + (2 + 2 x 3 x 4) bytes
        (3, 106)
        >>> sorted(state.state_dict()["worker_error"])
        ['bias', 'weight']
        >>> dist.destroy_process_group()
    """

    def __init__(
        self,
        name: str,
        *,
        warmup_steps: int,
        process_group: dist.ProcessGroup | None,
        parameter_names: Mapping[int, str],
        parameter_numels: Mapping[str, int],
        parameter_rows: Mapping[str, int] | None = None,
        parameter_shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> None:
        self.name = name
        self.warmup_steps = warmup_steps
        self.step = 0
        self.bytes_sent = 0
        self.worker_error: dict[str, Tensor] = {}
        self.server_error: dict[str, Tensor] = {}
        self.powersgd_state: powersgd.PowerSGDState | None = None
        self.worker_momentum: dict[str, Tensor] = {}
        # The options, which register_compression sets (its defaults for one_bit and
        # one_bit_two_phase are granularity "row" and two_level True); these are what the
        # hooks without options (sign_majority) use.
        self.error_feedback = True
        self.granularity = "tensor"
        self.two_level = False
        self.momentum = 0.0
        self.process_group = process_group
        self._parameter_names = dict(parameter_names)  # id(parameter) -> name
        self._parameter_numels = dict(parameter_numels)
        self._parameter_rows = dict(parameter_rows or {})  # rows of granularity "row"
        self._parameter_shapes = dict(parameter_shapes or {})
        # sign_majority's coin for an exact 0 is seeded by the backward pass and the
        # parameter's index, the same on every rank whatever the bucket layout.
        self._parameter_index = {name: i for i, name in enumerate(self._parameter_numels)}
        self._coin_generators: dict[str, torch.Generator] = {}
        # With DDP's find_unused_parameters (or static_graph): the backward pass (a value
        # of ``step``) in which autograd last accumulated a gradient into each parameter.
        # None: DDP guarantees that every parameter gets one at every pass.
        self._used_in: dict[str, int] | None = None
        self._segments: dict[tuple[tuple[int, ...], str], Segments] = {}
        self._chunks: dict[tuple[tuple[int, ...], int, str], Chunks] = {}
        # PowerSGD: the parameter names of each bucket index at its last call, and
        # memories loaded from a checkpoint, waiting for a bucket with the same names.
        self._powersgd_layouts: dict[int, tuple[str, ...]] = {}
        self._powersgd_pending: dict[tuple[str, ...], dict[str, Tensor]] = {}

    @property
    def world_size(self) -> int:
        """The number of ranks in the process group."""
        return dist.get_world_size(self.process_group)

    def state_dict(self) -> dict[str, Any]:
        """This rank's state: step, bytes_sent, error memories (and PowerSGD's memories),
        as copies: editing it, or training on, leaves the other alone."""
        state: dict[str, Any] = {
            "name": self.name,
            "step": self.step,
            "bytes_sent": self.bytes_sent,
            "world_size": self.world_size,
            "worker_error": _copied(self.worker_error),
            "server_error": _copied(self.server_error),
            "worker_momentum": _copied(self.worker_momentum),
        }
        if self.powersgd_state is not None:
            state["powersgd"] = _powersgd_state_dict(
                self.powersgd_state, self._powersgd_layouts, self._powersgd_pending
            )
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        r"""Restore a state saved by :meth:`state_dict` (same compression, same parameters).

        ``one_bit_two_phase`` also needs the same world size (its server memory holds one
        chunk of :math:`\lceil d/W \rceil` elements per parameter); the other memories
        do not depend on it. A state that does not fit (other keys, parameters, shapes or
        PowerSGD options) is refused before anything is loaded, with what did not fit.
        """
        owner = "CompressionState.load_state_dict"
        required: tuple[str, ...] = (
            "name",
            "step",
            "bytes_sent",
            "world_size",
            "worker_error",
            "server_error",
        )
        check_state_keys(state_dict, required, owner, "CompressionState.state_dict()")
        if state_dict["name"] != self.name:
            raise ValueError(
                f"The 'state_dict' parameter of {owner} must be the state of a {self.name!r} "
                f"compression. Got the state of a {state_dict['name']!r} compression "
                "instead."
            )
        if self.powersgd_state is not None:
            check_state_keys(
                state_dict, (*required, "powersgd"), owner, "CompressionState.state_dict()"
            )
        if state_dict["server_error"] and state_dict["world_size"] != self.world_size:
            raise ValueError(
                f"The 'state_dict' parameter of {owner} must come from a run with world size "
                f"{self.world_size} (the two-phase server memory is one chunk per rank). Got "
                f"world size {state_dict['world_size']} instead; resume on "
                f"{state_dict['world_size']} ranks, or set its 'server_error' to {{}} to start "
                "the server memories afresh."
            )
        worker_error = self._checked_memory(state_dict["worker_error"], "worker_error", 1)
        server_error = self._checked_memory(
            state_dict["server_error"], "server_error", self.world_size
        )
        worker_momentum = self._checked_memory(
            state_dict.get("worker_momentum", {}), "worker_momentum", 1
        )
        pending = None
        if self.powersgd_state is not None:
            pending = self._checked_powersgd(state_dict["powersgd"])
        self.step = int(state_dict["step"])
        self.bytes_sent = int(state_dict["bytes_sent"])
        self.worker_error = worker_error
        self.server_error = server_error
        self.worker_momentum = worker_momentum
        if self._used_in is not None:  # passes numbered from the loaded step on
            self._used_in = {}
        if self.powersgd_state is not None and pending is not None:
            _load_powersgd(self.powersgd_state, state_dict["powersgd"])
            self._powersgd_pending = pending
            self._powersgd_layouts = {}

    def _checked_memory(self, memory: Any, key: str, world_size: int) -> dict[str, Tensor]:
        owner = "CompressionState.load_state_dict"
        if not isinstance(memory, Mapping):
            raise ValueError(
                f"The 'state_dict' parameter of {owner} must hold a {key} dict from parameter "
                f"name to tensor. Got {_describe(memory)} instead; load a state saved by "
                "CompressionState.state_dict()."
            )
        checked = {}
        for name, tensor in memory.items():
            if name not in self._parameter_numels:
                raise ValueError(
                    f"The 'state_dict' parameter of {owner} must hold a {key} for this "
                    f"model's parameters ({', '.join(self._parameter_numels)}). Got one for "
                    f"{name!r} instead; load the state this compression saved for this model "
                    "(its parameters named as model.module.named_parameters() names them)."
                )
            expected = self._chunk_numel(name, world_size)
            if not isinstance(tensor, Tensor) or tensor.numel() != expected:
                raise ValueError(
                    f"The 'state_dict' parameter of {owner} must hold a {key} of {expected} "
                    f"elements for parameter {name!r}{self._memory_layout(name, key)}. Got "
                    f"{_describe(tensor)} instead; {_memory_fix(key)}."
                )
            checked[name] = tensor.detach().clone().reshape(-1)
        return checked

    def _memory_layout(self, name: str, key: str) -> str:
        """What a memory's size follows from, for an error message."""
        shape = self._parameter_shapes.get(name)
        parts = [f"of shape {shape}"] if shape is not None else []
        if key == "server_error":
            parts.append(
                f"this rank's chunk with granularity {self.granularity!r} and world size "
                f"{self.world_size}"
            )
        return f" ({'; '.join(parts)})" if parts else ""

    def _checked_powersgd(self, saved: Any) -> dict[tuple[str, ...], dict[str, Tensor]]:
        """Loaded PowerSGD memories by bucket names, checked against this model and the
        PowerSGD options (torch's hook would fail on them deep in a later backward pass)."""
        owner = "CompressionState.load_state_dict"
        writer = "the 'powersgd' entry of CompressionState.state_dict()"
        check_state_keys(saved, _POWERSGD_KEYS, owner, writer)
        pending = {}
        for entry in saved["buckets"]:
            names = tuple(entry.get("names", ())) if isinstance(entry, Mapping) else ()
            if not names or any(name not in self._parameter_numels for name in names):
                raise ValueError(
                    f"The 'state_dict' parameter of {owner} must hold PowerSGD memories for "
                    f"buckets of this model's parameters ({', '.join(self._parameter_numels)}). "
                    f"Got a bucket entry {_describe_entry(entry)} instead; load the state this "
                    "compression saved for this model."
                )
            # Sizes follow from the parameters' shapes: a state built without them (not
            # through register_compression) checks the keys and tensors only.
            shaped = all(name in self._parameter_shapes for name in names)
            expected = self._powersgd_sizes(names) if shaped else {}
            memories = {key: value for key, value in entry.items() if key != "names"}
            for key, tensor in memories.items():
                if key not in POWERSGD_MEMORIES:
                    raise ValueError(
                        f"The 'state_dict' parameter of {owner} must hold PowerSGD bucket "
                        f"entries with the keys names, error, p and q. Got key {key!r} for "
                        f"the bucket of {list(names)} instead; load a state saved by "
                        "CompressionState.state_dict()."
                    )
                if not isinstance(tensor, Tensor):
                    raise ValueError(
                        f"The 'state_dict' parameter of {owner} must hold, for the PowerSGD "
                        f"bucket of {list(names)}, a {key!r} memory tensor. Got "
                        f"{_describe(tensor)} instead; load a state saved by "
                        "CompressionState.state_dict()."
                    )
                if key in expected and tensor.numel() != expected[key][0]:
                    size, reason, fix = expected[key]
                    raise ValueError(
                        f"The 'state_dict' parameter of {owner} must hold, for the PowerSGD "
                        f"bucket of {list(names)}, a {key!r} memory of {size} elements "
                        f"({reason}). Got {_describe(tensor)} instead; {fix}."
                    )
            pending[names] = {key: tensor.detach().clone() for key, tensor in memories.items()}
        return pending

    def _powersgd_sizes(self, names: Sequence[str]) -> dict[str, tuple[int, str, str]]:
        """(elements, why, how to fix a mismatch) of each PowerSGD memory of a bucket, by
        torch's rule: a gradient is a (shape[0], -1) matrix, compressed to P (rows x r)
        and Q (columns x r), r = min(rows, columns, rank), if min_compression_rate allows."""
        torch_state = self.powersgd_state
        if torch_state is None:  # only called for powersgd
            raise RuntimeError("PowerSGD sizes need CompressionState.powersgd_state.")
        rank, rate = torch_state.matrix_approximation_rank, torch_state.min_compression_rate
        p_size = q_size = 0
        for name in names:
            rows = self._parameter_shapes[name][0]
            columns = self._parameter_numels[name] // rows
            r = min(rows, columns, rank)
            if powersgd._should_compress(rows, columns, r, rate)[0]:
                p_size, q_size = p_size + rows * r, q_size + columns * r
        options = f"matrix_approximation_rank {rank}, min_compression_rate {rate}"
        refit = (
            "resume with the saved run's matrix_approximation_rank and min_compression_rate, "
            "or set the 'buckets' of its 'powersgd' entry to [] to start PowerSGD's "
            "memories afresh"
        )
        numel = sum(self._parameter_numels[name] for name in names)
        return {
            "error": (
                numel,
                "the bucket's gradient elements",
                "load the state this compression saved for a model with the same parameter "
                "shapes, or set the 'buckets' of its 'powersgd' entry to [] to start "
                "PowerSGD's memories afresh",
            ),
            "p": (p_size, f"rows x rank over its compressed matrices, {options}", refit),
            "q": (q_size, f"columns x rank over its compressed matrices, {options}", refit),
        }

    def _chunk_numel(self, name: str, world_size: int) -> int:
        """Elements of one of ``world_size`` chunks of a parameter (padding included):
        each scale segment (the tensor, or each row) is cut into ``world_size`` chunks."""
        numel = self._parameter_numels[name]
        rows = self._parameter_rows.get(name, 1) if self.granularity == "row" else 1
        return rows * math.ceil(numel / rows / world_size) if rows else 0

    # The hooks' helpers.

    def _track_usage(self, named: Sequence[tuple[str, Tensor]]) -> None:
        """Record in which backward pass each parameter gets a gradient on this rank."""
        self._used_in = {}
        for name, parameter in named:
            if parameter.requires_grad:
                parameter.register_post_accumulate_grad_hook(self._usage_hook(name))

    def _usage_hook(self, name: str) -> Callable[[Tensor], None]:
        def record(_: Tensor) -> None:
            if self._used_in is not None:
                self._used_in[name] = self.step

        return record

    def _unused_names(self, names: Sequence[str], step: int) -> list[bool]:
        """Per parameter: True if it got no gradient on this rank in backward pass
        ``step`` (DDP filled zeros there); all False without find_unused_parameters."""
        if self._used_in is None:
            return [False] * len(names)
        return [self._used_in.get(name) != step for name in names]

    def _unused(
        self, names: Sequence[str], lengths: Sequence[int], step: int, device: torch.device
    ) -> Tensor | None:
        """(n,) True on the elements of the bucket's parameters that got no gradient on
        this rank in backward pass ``step`` (DDP filled zeros there); None if none."""
        unused = self._unused_names(names, step)
        if not any(unused):
            return None
        flags = torch.tensor(unused, dtype=torch.bool, device=device)
        return flags.repeat_interleave(torch.tensor(lengths, device=device))

    def _coin_flips(
        self, names: Sequence[str], lengths: Sequence[int], step: int, device: torch.device
    ) -> Tensor:
        """(n,) a fair coin per element of the bucket, the same on every rank: seeded by
        the backward pass and each parameter's index, so DDP's bucket layout (which
        changes after its first pass, also in a resumed run) does not matter."""
        key = str(device)
        if key not in self._coin_generators:
            self._coin_generators[key] = torch.Generator(device=device)
        generator = self._coin_generators[key]
        flips = []
        for name, length in zip(names, lengths, strict=True):
            generator.manual_seed(step * len(self._parameter_index) + self._parameter_index[name])
            flips.append(
                torch.randint(0, 2, (length,), generator=generator, device=device, dtype=torch.bool)
            )
        return torch.cat(flips)

    def _advance(self, bucket: GradBucket) -> bool:
        """Whether this backward pass compresses; counts the pass at its last bucket."""
        compress = self.step >= self.warmup_steps
        if bucket.is_last():
            self.step += 1
        return compress

    def _names(self, bucket: GradBucket) -> tuple[str, ...]:
        return tuple(self._parameter_names[id(p)] for p in bucket.parameters())

    def _tensor_segments(self, lengths: tuple[int, ...], device: torch.device) -> Segments:
        key = (lengths, str(device))
        if key not in self._segments:
            self._segments[key] = tensor_segments(lengths, device)
        return self._segments[key]

    def _chunk_layout(self, lengths: tuple[int, ...], device: torch.device) -> Chunks:
        key = (lengths, self.world_size, str(device))
        if key not in self._chunks:
            self._chunks[key] = chunk_layout(lengths, self.world_size, device)
        return self._chunks[key]


def register_compression(
    model: DistributedDataParallel, name: str, *, warmup_steps: int = 2, **options: Any
) -> CompressionState | None:
    r"""Register gradient compression ``name`` as ``model``'s DDP communication hook.

    Each hook returns the average over the :math:`W` ranks of (a compressed form of) the
    bucket's gradients, as DDP's default allreduce does; the first ``warmup_steps``
    backward passes use DDP's plain allreduce, in the gradients' dtype. The methods (math,
    bytes per rank per step for :math:`n` gradient elements in :math:`k` tensors, and when
    to use them are in docs/distributed.md):

    - ``"none"``: DDP's own allreduce; nothing is registered and None is returned.
    - ``"fp16"``: torch's ``fp16_compress_hook`` (allreduce in float16).
    - ``"powersgd"``: torch's ``powerSGD_hook`` with a ``PowerSGDState``
      (``start_powerSGD_iter = warmup_steps``; options: ``matrix_approximation_rank``,
      ``min_compression_rate``, ``orthogonalization_epsilon``, ``random_seed``,
      ``use_error_feedback``, ``warm_start``, ``batch_tensors_with_same_shape``).
    - ``"one_bit"``: error-feedback 1-bit quantization, :math:`p = g + e`,
      :math:`q = Q(p)`, :math:`e \leftarrow p - q`; signs (1 bit) and scales are
      all-gathered and the result is :math:`\frac1W \sum_r q_r`. By default :math:`Q`
      has two scales per row (``granularity="row"``, ``two_level=True``: Seide et al.
      2014's quantizer); with ``granularity="tensor"`` and ``two_level=False`` it is the
      scaled sign :math:`\operatorname{mean}|p| \cdot \operatorname{sign}(p)` per tensor.
    - ``"sign_majority"``: signSGD with majority vote, no error feedback: the result is
      :math:`\bar s \cdot \operatorname{sign}(\sum_r v_r)` with :math:`\bar s` the mean
      over ranks of :math:`\operatorname{mean}|g_r|` per tensor and the votes
      :math:`v_r = \operatorname{sign}(g_r)`, except for zeros: a rank whose tensor is all
      zero abstains on it (its scale, 0, says so), and any other exact zero votes a fair
      coin (the same on every rank, flipped on odd ranks: ranks :math:`2k` and
      :math:`2k+1` both at zero cancel), so zeros are not biased toward :math:`+1` (the
      rule and its limits are in docs/distributed.md).
    - ``"one_bit_two_phase"``: the same 1-bit code in an all-to-all (each rank averages
      one chunk, with its own error feedback; the chunk it averages is its own, kept
      exact, so its worker memory there stays 0) then an all-gather of the re-compressed
      chunks: bytes per rank do not grow with :math:`W`.

    With DDP's ``find_unused_parameters`` (or ``static_graph``), a parameter that gets no
    gradient on a rank is sent by that rank as 0 and its error memory keeps all of it (DDP
    drops the result for a parameter that no rank used, so anything sent would be lost);
    with the ``momentum`` option the same holds in the warmup steps.

    Signs are one bit, so in the error-feedback codes :math:`\operatorname{sign}(0)` is
    :math:`+1` (the memory keeps the difference); majority ties give 0.

    Args:
        model: the DistributedDataParallel model (no hook registered yet).
        name: one of :data:`COMPRESSIONS`.
        warmup_steps: backward passes with plain allreduce first, an int >= 2 (DDP
            rebuilds its buckets after the first one).
        **options: the compression's options: ``"powersgd"``'s above; for ``"one_bit"``
            ``error_feedback`` (default True; False sends a plain scaled sign, whose
            defaults are ``granularity="tensor"`` and ``two_level=False``); for
            ``"one_bit"`` and ``"one_bit_two_phase"`` ``granularity`` (``"row"``, the
            default: one scale per slice along the first dimension of each tensor of 2
            or more dimensions, one per tensor of fewer; or ``"tensor"``),
            ``two_level`` (default True: two scales per segment, the mean of the
            entries :math:`\ge 0` for a 1 bit and minus the mean :math:`|p|` of the
            negative ones for a 0 bit, Seide et al. 2014; False: one, the mean
            :math:`|p|`; the two-phase hook cuts each segment into chunks) and
            ``momentum`` (a float in [0, 1), default 0): each rank
            compresses its own momentum :math:`m_r \leftarrow \beta m_r + g_r` (plus its
            error memory) instead of its gradient, for an optimizer without momentum
            (Zheng, Huang & Kwok 2019); the warmup steps allreduce the momenta.

    Returns:
        The hook's :class:`CompressionState` (save its ``state_dict()`` in checkpoints,
        read ``bytes_sent``), or None for ``"none"``.

    Example:
        >>> import os, tempfile, torch, torch.distributed as dist
        >>> from torch.nn.parallel import DistributedDataParallel
        >>> from gradwise.distributed import register_compression
        >>> init = "file://" + os.path.join(tempfile.mkdtemp(), "init")
        >>> dist.init_process_group("gloo", init_method=init, rank=0, world_size=1)
        >>> model = DistributedDataParallel(torch.nn.Linear(16, 4))
        >>> state = register_compression(model, "powersgd", matrix_approximation_rank=1)
        >>> state.powersgd_state.start_powerSGD_iter
        2
        >>> dist.destroy_process_group()

    References: Seide, Fu, Droppo, Li & Yu, "1-Bit Stochastic Gradient Descent and its
    Application to Data-Parallel Distributed Training of Speech DNNs", Interspeech 2014;
    Karimireddy, Rebjock, Stich & Jaggi, "Error Feedback Fixes SignSGD and other Gradient
    Compression Schemes", ICML 2019; Bernstein, Wang, Azizzadenesheli & Anandkumar,
    "signSGD: Compressed Optimisation for Non-Convex Problems", ICML 2018; Tang et al.,
    "1-bit Adam: Communication Efficient Large-Scale Training with Adam's Convergence
    Speed", ICML 2021 (the two-phase compressed allreduce); Vogels, Karimireddy & Jaggi,
    "PowerSGD: Practical Low-Rank Gradient Compression for Distributed Optimization",
    NeurIPS 2019; Zheng, Huang & Kwok, "Communication-Efficient Distributed Blockwise
    Momentum SGD with Error-Feedback", NeurIPS 2019.
    """
    if not isinstance(model, DistributedDataParallel):
        raise TypeError(
            "The 'model' parameter of register_compression must be a "
            f"torch.nn.parallel.DistributedDataParallel. Got a {type(model).__name__} instead."
        )
    check_compression(name, warmup_steps=warmup_steps, **options)
    if name == "none":
        return None
    named = list(model.module.named_parameters())
    state = CompressionState(
        name,
        warmup_steps=warmup_steps,
        process_group=model.process_group,
        parameter_names={id(p): n for n, p in named},
        parameter_numels={n: p.numel() for n, p in named},
        parameter_rows={n: _rows(p) for n, p in named},
        parameter_shapes={n: tuple(p.shape) for n, p in named},
    )
    if name in ("one_bit", "one_bit_two_phase"):
        state.error_feedback = bool(options.get("error_feedback", True))
        # Two scales per row by default: they shrink the error memory, whose lag momentum
        # 0.9 multiplies. On benchmarks/compression.py at lr 0.01 a scale per tensor ends
        # +7.0% (one_bit) and +14.4% (two-phase) above uncompressed DDP in training loss,
        # these +1.1% and +2.0% (docs/benchmarks.md, "Gradient compression"). The plain
        # scaled sign without error feedback keeps one scale per tensor, like sign_majority.
        finer = state.error_feedback
        state.granularity = str(options.get("granularity", "row" if finer else "tensor"))
        state.two_level = bool(options.get("two_level", finer))
        state.momentum = float(options.get("momentum", 0.0))
        if model.find_unused_parameters or model.static_graph:
            # DDP drops the result for a parameter no rank used: sent as 0, its error
            # memory keeps all of it (see _one_bit_hook).
            state._track_usage(named)
    if name == "powersgd":
        _check_matrices(named)
        state.powersgd_state = powersgd.PowerSGDState(
            model.process_group, start_powerSGD_iter=warmup_steps, **options
        )
    model.register_comm_hook(state, _HOOKS[name])
    return state


def _check_matrices(named: Sequence[tuple[str, Tensor]]) -> None:
    """torch's powerSGD_hook views each gradient as ``(shape[0], -1)``: a 0-d or empty
    one fails there (an IndexError, a reshape error) at the first compressed step."""
    for parameter_name, parameter in named:
        if parameter.requires_grad and (parameter.dim() == 0 or parameter.numel() == 0):
            raise ValueError(
                "The 'model' parameter of register_compression must have only parameters of "
                "1 or more dimensions and elements for 'powersgd' (torch's powerSGD_hook views "
                "each gradient as a matrix of shape[0] rows). Got parameter "
                f"{parameter_name!r} of shape {tuple(parameter.shape)} instead; give it the "
                "shape (1,), or use another compression."
            )


def check_compression(name: str, *, warmup_steps: int = 2, **options: Any) -> None:
    """Raise the error :func:`register_compression` would raise for these arguments.

    It needs no model or process group, so a launcher can check a config before it
    starts the ranks.

    Raises:
        ValueError, TypeError: an unknown name or option, or a value out of range.
    """
    check("name", "register_compression", name, OneOf(COMPRESSIONS))
    check("warmup_steps", "register_compression", warmup_steps, _WARMUP_STEPS)
    _check_options(name, options)


def _check_options(name: str, options: Mapping[str, Any]) -> None:
    allowed = COMPRESSION_OPTIONS.get(name, {})
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        expected = (
            f"options of {name!r} ({', '.join(allowed)})"
            if allowed
            else f"empty ({name!r} takes no options)"
        )
        raise invalid_value_error("options", "register_compression", expected, unknown)
    check_all("register_compression", options, allowed)


# The hooks. DDP calls hook(state, bucket) once per bucket and per backward pass; the
# future's tensor replaces the bucket's gradients (DDP does not divide by W itself).


def _plain_allreduce(state: CompressionState, bucket: GradBucket) -> Future[Tensor]:
    buffer = bucket.buffer()
    state.bytes_sent += buffer.numel() * buffer.element_size()
    return default_hooks.allreduce_hook(state.process_group, bucket)  # type: ignore[arg-type]


def _fp16_hook(state: CompressionState, bucket: GradBucket) -> Future[torch.Tensor]:
    if not state._advance(bucket):
        return _plain_allreduce(state, bucket)
    state.bytes_sent += bucket.buffer().numel() * 2
    return default_hooks.fp16_compress_hook(state.process_group, bucket)  # type: ignore[arg-type]


class _CudaForPowerSGD:
    """``torch.cuda`` as torch's PowerSGD hook sees it: ``synchronize`` leaves devices
    other than CUDA alone.

    Its decompress step calls ``torch.cuda.synchronize(bucket_device)`` whenever the
    machine has a GPU, so a bucket on the CPU (gloo, ``device: cpu``, on a GPU machine)
    raised "Expected a cuda device, but got: cpu" (torch 2.11 to 2.13). Installed in that
    torch module alone; every other call goes to ``torch.cuda`` unchanged.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cuda, name)

    @staticmethod
    def synchronize(device: Any = None) -> None:
        if device is None or torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)


class _TorchForPowerSGD:
    """The ``torch`` module for torch's PowerSGD hook, with ``_CudaForPowerSGD`` as cuda."""

    cuda = _CudaForPowerSGD()

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


setattr(powersgd, "torch", _TorchForPowerSGD())  # noqa: B010 (mypy: not a module)


def _powersgd_hook(state: CompressionState, bucket: GradBucket) -> Future[torch.Tensor]:
    torch_state = state.powersgd_state
    if torch_state is None:  # register_compression always sets it
        raise RuntimeError("The powersgd hook needs CompressionState.powersgd_state.")
    compress = torch_state.iter >= torch_state.start_powerSGD_iter
    state._advance(bucket)
    buffer = bucket.buffer()
    if not compress:
        state.bytes_sent += buffer.numel() * buffer.element_size()
        return powersgd.powerSGD_hook(torch_state, bucket)
    _match_powersgd_layout(state, torch_state, bucket)
    # torch counts the elements it allreduces (P, Q and uncompressed tensors) as it goes.
    before = torch_state.total_numel_after_compression
    future = powersgd.powerSGD_hook(torch_state, bucket)
    sent = torch_state.total_numel_after_compression - before
    state.bytes_sent += sent * buffer.element_size()
    # torch's hook issues its P and Q allreduces from `then` callbacks. On gloo these run
    # on gloo's threads, so with several buckets the ranks can issue them in different
    # orders: 2 ranks with 2 buckets hung in each of 2 runs. Finishing the bucket
    # here keeps the order, at the cost of overlapping it with the backward pass (on NCCL,
    # wait() makes the current stream wait rather than blocking the CPU on the GPU).
    future.wait()
    return future


def _one_bit_hook(state: CompressionState, bucket: GradBucket) -> Future[torch.Tensor]:
    backward_pass = state.step
    if not state._advance(bucket):
        return _warmup_allreduce(state, bucket, backward_pass)
    buffer, names, lengths, dtype = _unpack_bucket(state, bucket)
    segments = state._tensor_segments(_scale_lengths(state, bucket)[0], buffer.device)
    two_level = state.two_level
    num_scales = segments.num_segments * (2 if two_level else 1)
    p = _gradient_or_momentum(state, buffer, names, lengths, dtype)
    if state.error_feedback:
        p = p + _joined(state.worker_error, names, lengths, dtype, buffer.device)
    # A parameter without a gradient on this rank sends 0 (zero scales) and its memory
    # keeps p: DDP drops the result for a parameter that no rank used, so a q sent for it
    # would be lost, while a 0 sent is right whether or not another rank used it.
    unused = state._unused(names, lengths, backward_pass, buffer.device)
    sent = p if unused is None else p.masked_fill(unused, 0.0)
    # (1, s) scales, s = k per tensor (2k two-level; per row: rows), (1, ceil(n / 8)) bits
    scales, packed = encode(sent.unsqueeze(0), segments, two_level=two_level)
    if state.error_feedback:
        error = p - decode(scales, packed, segments, dtype, two_level=two_level)[0]
        _store(state.worker_error, names, lengths, error)
    payload = to_payload(scales, packed)[0]
    work, gathered = _all_gather(state, payload)  # (W, 4s + ceil(n / 8))

    def average(_: Future[Any]) -> Tensor:
        all_scales, all_packed = from_payload(gathered, num_scales)
        decoded = decode(all_scales, all_packed, segments, dtype, two_level=two_level)
        buffer.copy_(decoded.mean(dim=0))
        return buffer

    return _future(work).then(average)


def _sign_majority_hook(state: CompressionState, bucket: GradBucket) -> Future[torch.Tensor]:
    backward_pass = state.step
    if not state._advance(bucket):
        return _plain_allreduce(state, bucket)
    buffer, names, lengths, dtype = _unpack_bucket(state, bucket)
    segments = state._tensor_segments(lengths, buffer.device)
    g = buffer.to(dtype)
    # A zero has no sign: it votes a fair coin, the same coin on every rank but flipped on
    # odd ranks, so ranks 2k and 2k + 1 that both have a zero there cancel out exactly.
    # Each coin depends on the pass and the parameter alone, so a rank that draws none
    # disagrees with no one: on the CPU, where reading whether the bucket has a zero
    # costs no wait, the coins (one generator seeding per parameter, ~8 us each) are
    # drawn only for a bucket that has one; on a GPU always, not to wait for the device
    # inside the hook.
    zero = g == 0
    votes = g > 0
    if buffer.device.type != "cpu" or bool(zero.any()):
        coin = state._coin_flips(names, lengths, backward_pass, buffer.device)
        odd = dist.get_rank(state.process_group) % 2 == 1
        votes = torch.where(zero, coin ^ odd, votes)
    # (1, k) mean|g| per tensor: 0 for a tensor with no nonzero gradient, which abstains.
    scales = segment_scales(g.unsqueeze(0), segments)
    payload = to_payload(scales, pack_bits(votes.unsqueeze(0)))[0]
    work, gathered = _all_gather(state, payload)

    def vote(_: Future[Any]) -> Tensor:
        all_scales, all_packed = from_payload(gathered, segments.num_segments)
        signs = unpack_bits(all_packed, segments.length).to(torch.int32) * 2 - 1  # (W, n)
        voting = (all_scales > 0)[:, segments.segment_of]  # (W, n) False: abstains
        majority = torch.sign((signs * voting).sum(dim=0)).to(dtype)  # a tie gives 0
        magnitude = all_scales.mean(dim=0).to(dtype)[segments.segment_of]
        buffer.copy_(magnitude * majority)
        return buffer

    return _future(work).then(vote)


def _one_bit_two_phase_hook(state: CompressionState, bucket: GradBucket) -> Future[torch.Tensor]:
    backward_pass = state.step
    if not state._advance(bucket):
        return _warmup_allreduce(state, bucket, backward_pass)
    buffer, names, lengths, dtype = _unpack_bucket(state, bucket)
    units, units_per_tensor = _scale_lengths(state, bucket)  # tensors, or their rows
    chunks = state._chunk_layout(units, buffer.device)
    world_size, rank = state.world_size, dist.get_rank(state.process_group)
    segments, two_level = chunks.segments, state.two_level
    num_scales = segments.num_segments * (2 if two_level else 1)

    # Phase 1: compress (g + e_worker) chunk by chunk; chunk r goes to rank r. This rank's
    # own chunk never leaves it: it keeps it exact, so it has no error to remember.
    p = _gradient_or_momentum(state, buffer, names, lengths, dtype)
    p = p + _joined(state.worker_error, names, lengths, dtype, buffer.device)
    # A parameter without a gradient here sends 0 and keeps p (as in _one_bit_hook).
    unused = state._unused(names, lengths, backward_pass, buffer.device)
    sent_p = p if unused is None else p.masked_fill(unused, 0.0)
    rows = torch.cat([sent_p, p.new_zeros(1)])[chunks.gather_index].reshape(world_size, -1)
    scales, packed = encode(rows, segments, two_level=two_level)  # (W, s), (W, ceil(L / 8))
    q = decode(scales, packed, segments, dtype, two_level=two_level)
    q[rank] = rows[rank]
    q = q.reshape(-1)[chunks.inverse]
    _store(state.worker_error, names, lengths, p - q)
    payload = to_payload(scales, packed)
    # Blocking: the server step needs the result, and must not issue its collective from a
    # callback (see the module docstring).
    received = _all_to_all(state, payload)  # row s: chunk `rank` from rank s

    # Server: average chunk `rank` over the senders, add e_server, compress again.
    valid = chunks.valid[rank].to(dtype)
    chunk_lengths = _grouped_sums(chunks.chunk_lengths, units_per_tensor)  # per tensor
    own = Segments(segments.segment_of, segments.counts[rank : rank + 1])
    sender_scales, sender_packed = from_payload(received, num_scales)
    sent = decode(sender_scales, sender_packed, segments, dtype, two_level=two_level)
    sent[rank] = rows[rank]
    mean = sent.mean(dim=0) * valid
    server_p = mean + _joined(state.server_error, names, chunk_lengths, dtype, buffer.device)
    server_sent = server_p
    if state._used_in is not None:
        # A segment that every sender sent as 0 (a parameter no rank used, whose result
        # DDP drops) is sent as 0 again and its server memory keeps server_p: right
        # either way.
        silence = sent.abs().sum(dim=0)
        silent = sent.new_zeros(segments.num_segments).index_add_(0, segments.segment_of, silence)
        server_sent = server_p.masked_fill(silent[segments.segment_of] == 0, 0.0)
    server_scales, server_packed = encode(server_sent.unsqueeze(0), own, two_level=two_level)
    server_q = decode(server_scales, server_packed, own, dtype, two_level=two_level)[0] * valid
    _store(state.server_error, names, chunk_lengths, server_p - server_q)

    # Phase 2: everyone gathers every server's compressed chunk.
    server_payload = to_payload(server_scales, server_packed)[0]
    work, gathered = _all_gather(state, server_payload)

    def assemble(_: Future[Any]) -> Tensor:
        chunk_scales, chunk_packed = from_payload(gathered, num_scales)
        decoded = decode(chunk_scales, chunk_packed, segments, dtype, two_level=two_level)
        buffer.copy_(decoded.reshape(-1)[chunks.inverse])
        return buffer

    return _future(work).then(assemble)


_HOOKS: dict[str, Callable[[CompressionState, GradBucket], Future[Tensor]]] = {
    "fp16": _fp16_hook,
    "powersgd": _powersgd_hook,
    "one_bit": _one_bit_hook,
    "sign_majority": _sign_majority_hook,
    "one_bit_two_phase": _one_bit_two_phase_hook,
}


def _unpack_bucket(
    state: CompressionState, bucket: GradBucket
) -> tuple[Tensor, tuple[str, ...], tuple[int, ...], torch.dtype]:
    """The buffer, its parameters' names and sizes, and the dtype to compute in."""
    buffer = bucket.buffer()
    lengths = tuple(g.numel() for g in bucket.gradients())
    if sum(lengths) != buffer.numel():  # DDP packs a bucket's gradients without gaps
        raise RuntimeError(
            f"DDP bucket {bucket.index()} holds {buffer.numel()} elements but its gradients "
            f"have {sum(lengths)}; gradwise's compression hooks need dense, unpadded buckets."
        )
    # float16/bfloat16 gradients are compressed and averaged in float32.
    dtype = torch.promote_types(buffer.dtype, torch.float32)
    return buffer, state._names(bucket), lengths, dtype


def _warmup_allreduce(
    state: CompressionState, bucket: GradBucket, backward_pass: int
) -> Future[Tensor]:
    """Plain allreduce of the gradients, or of the ranks' momenta with that option.

    With the momentum option, a parameter without a gradient on this rank is handled as
    after the warmup (see :func:`_one_bit_hook`): its momentum decays as for a zero
    gradient, the rank sends 0, and what it did not send waits in its error memory
    (dropped without error feedback, as it is then). DDP drops the result for a parameter
    that no rank used, so a momentum sent for it would be lost for good.
    """
    if state.momentum:
        buffer, names, lengths, dtype = _unpack_bucket(state, bucket)
        m = _gradient_or_momentum(state, buffer, names, lengths, dtype)
        unused = state._unused_names(names, backward_pass)
        if any(unused):
            parts = m.split(list(lengths))
            sent = []
            for name, part, skipped in zip(names, parts, unused, strict=True):
                if skipped and state.error_feedback:
                    memory = state.worker_error.get(name)
                    state.worker_error[name] = part if memory is None else memory + part
                sent.append(torch.zeros_like(part) if skipped else part)
            m = torch.cat(sent)
        buffer.copy_(m)
    return _plain_allreduce(state, bucket)


def _gradient_or_momentum(
    state: CompressionState,
    buffer: Tensor,
    names: Sequence[str],
    lengths: Sequence[int],
    dtype: torch.dtype,
) -> Tensor:
    """The bucket's gradient g, or with the momentum option m <- momentum * m + g (kept)."""
    g = buffer.to(dtype)
    if not state.momentum:
        return g
    m = state.momentum * _joined(state.worker_momentum, names, lengths, dtype, buffer.device) + g
    _store(state.worker_momentum, names, lengths, m)
    return m


def _rows(parameter: Tensor) -> int:
    """Rows for granularity "row": slices along the first dimension of a tensor with 2
    or more dimensions (an output unit of a linear layer, an output channel of a
    convolution); a tensor of fewer dimensions is one row."""
    return parameter.shape[0] if parameter.dim() >= 2 else 1


def _scale_lengths(
    state: CompressionState, bucket: GradBucket
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The lengths of the bucket's scale segments (one per tensor, or one per row, see
    :func:`_rows`), and how many segments each tensor has."""
    if state.granularity == "tensor":
        return tuple(g.numel() for g in bucket.gradients()), (1,) * len(bucket.gradients())
    lengths: list[int] = []
    counts: list[int] = []
    for parameter in bucket.parameters():
        rows = _rows(parameter)
        lengths += [parameter.numel() // rows] * rows if rows else []
        counts.append(rows)
    return tuple(lengths), tuple(counts)


def _grouped_sums(values: Sequence[int], sizes: Sequence[int]) -> list[int]:
    """Sums of consecutive groups of ``values``, ``sizes[i]`` values in group i."""
    ends = np.cumsum([0, *sizes])
    return [sum(values[start:end]) for start, end in zip(ends[:-1], ends[1:], strict=True)]


def _joined(
    memory: Mapping[str, Tensor],
    names: Sequence[str],
    lengths: Sequence[int],
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """The flat memory of a bucket's parameters, zeros where there is none yet."""
    parts = [
        memory[name].to(device=device, dtype=dtype)
        if name in memory
        else torch.zeros(length, dtype=dtype, device=device)
        for name, length in zip(names, lengths, strict=True)
    ]
    return torch.cat(parts)


def _store(
    memory: dict[str, Tensor], names: Sequence[str], lengths: Sequence[int], flat: Tensor
) -> None:
    for name, part in zip(names, flat.split(list(lengths)), strict=True):
        memory[name] = part


def _all_gather(state: CompressionState, payload: Tensor) -> tuple[dist.Work | None, Tensor]:
    """Start an all-gather of a uint8 row; the (W, bytes) result is valid once it is done."""
    # gloo wants the output flat (a (W, bytes) output is refused), NCCL takes either.
    gathered = payload.new_empty(state.world_size * payload.numel())
    state.bytes_sent += payload.numel()
    work = all_gather_flat(gathered, payload, group=state.process_group, async_op=True)
    return work, gathered.reshape(state.world_size, -1)


def _all_to_all(state: CompressionState, payload: Tensor) -> Tensor:
    """Row r of ``payload`` (W, bytes) goes to rank r; row s of the result came from rank s."""
    received = torch.empty_like(payload).reshape(-1)
    state.bytes_sent += payload.numel()
    dist.all_to_all_single(received, payload.reshape(-1), group=state.process_group)
    return received.reshape(payload.shape)


def _future(work: dist.Work | None) -> Future[Any]:
    if work is None:  # only when this rank is outside the process group
        raise RuntimeError("This rank is not in the compression hook's process group.")
    return work.get_future()


# PowerSGD's memories are torch's, keyed by bucket index. DDP's buckets change after its
# first iteration (so also on the first iteration of a resumed run): a memory is used only
# for a bucket holding the same parameters as when it was made.


def _match_powersgd_layout(
    state: CompressionState, torch_state: powersgd.PowerSGDState, bucket: GradBucket
) -> None:
    index, names = bucket.index(), state._names(bucket)
    if state._powersgd_layouts.get(index, names) != names:
        for _, memory in _powersgd_memories(torch_state):
            memory.pop(index, None)
    state._powersgd_layouts[index] = names
    pending = state._powersgd_pending.pop(names, None)
    if pending is not None:
        buffer = bucket.buffer()
        for key, memory in _powersgd_memories(torch_state):
            if key in pending:
                memory[index] = pending[key].to(device=buffer.device, dtype=buffer.dtype)


def _powersgd_memories(
    torch_state: powersgd.PowerSGDState,
) -> tuple[tuple[str, dict[int, Tensor]], ...]:
    """Torch's per-bucket memories: error feedback, and the warm-start P and Q."""
    return (
        ("error", torch_state.error_dict),
        ("p", torch_state.p_memory_dict),
        ("q", torch_state.q_memory_dict),
    )


def _powersgd_state_dict(
    torch_state: powersgd.PowerSGDState,
    layouts: Mapping[int, tuple[str, ...]],
    pending: Mapping[tuple[str, ...], Mapping[str, Tensor]],
) -> dict[str, Any]:
    kind, keys, position, has_gauss, cached_gaussian = torch_state.rng.get_state(legacy=True)
    buckets = []
    for index, names in layouts.items():
        entry: dict[str, Any] = {"names": list(names)}
        for key, memory in _powersgd_memories(torch_state):
            if index in memory:
                # A copy: torch's hook computes the next P and Q in these very tensors.
                entry[key] = memory[index].detach().clone()
        buckets.append(entry)
    # Loaded memories still waiting for their bucket (DDP has not rebuilt its buckets yet
    # since the resume) are this rank's state too.
    saved = {tuple(names) for names in layouts.values()}
    buckets += [
        {"names": list(names), **_copied(memories)}
        for names, memories in pending.items()
        if names not in saved
    ]
    return {
        "iter": torch_state.iter,
        "total_numel_before_compression": torch_state.total_numel_before_compression,
        "total_numel_after_compression": torch_state.total_numel_after_compression,
        "rng": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "buckets": buckets,
    }


def _load_powersgd(torch_state: powersgd.PowerSGDState, saved: Mapping[str, Any]) -> None:
    """Restore torch's counters and generator; its memories wait for their buckets."""
    torch_state.iter = int(saved["iter"])
    torch_state.total_numel_before_compression = int(saved["total_numel_before_compression"])
    torch_state.total_numel_after_compression = int(saved["total_numel_after_compression"])
    rng = saved["rng"]
    torch_state.rng.set_state(
        (
            rng["kind"],
            rng["keys"].numpy().astype(np.uint32),
            rng["position"],
            rng["has_gauss"],
            rng["cached_gaussian"],
        )
    )
    for _, memory in _powersgd_memories(torch_state):
        memory.clear()


#: The keys of the 'powersgd' entry of CompressionState.state_dict().
_POWERSGD_KEYS = (
    "iter",
    "total_numel_before_compression",
    "total_numel_after_compression",
    "rng",
    "buckets",
)


def check_state_keys(state_dict: Any, required: Sequence[str], owner: str, writer: str) -> None:
    """Raise the house error unless ``state_dict`` is a mapping with every required key."""
    if not isinstance(state_dict, Mapping):
        raise ValueError(
            f"The 'state_dict' parameter of {owner} must be a dict as {writer} returns it. "
            f"Got {_describe(state_dict)} instead; load a state saved by {writer}."
        )
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise ValueError(
            f"The 'state_dict' parameter of {owner} must hold the keys that {writer} writes "
            f"({', '.join(required)}). Got a dict without {', '.join(map(repr, missing))} "
            f"instead; load a state saved by {writer}."
        )


def _memory_fix(key: str) -> str:
    """How to fix a memory of the wrong size, for an error message."""
    if key == "server_error":
        return (
            "load the state this compression saved with the same granularity, on as many "
            "ranks, for a model with the same parameter shapes"
        )
    return "load the state this compression saved for a model with the same parameter shapes"


def _copied(memory: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {name: tensor.detach().clone() for name, tensor in memory.items()}


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of {value.numel()} elements"
    if isinstance(value, Mapping):
        return f"a dict with keys {sorted(map(str, value))}"
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


def _describe_entry(entry: Any) -> str:
    if isinstance(entry, Mapping):
        return f"with names {list(entry.get('names', []))!r}"
    return _describe(entry)
