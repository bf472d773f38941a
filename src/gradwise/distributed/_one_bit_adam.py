"""1-bit Adam (Tang et al. 2021): Adam's warmup, then frozen variance and 1-bit momentum.

No ``from __future__ import annotations`` in this module: ``register_comm_hook`` compares
the hook's annotations with ``dist.GradBucket`` and ``Future[torch.Tensor]``, and string
annotations fail that check.

The compressed momentum average is the two-phase 1-bit allreduce of the
``one_bit_two_phase`` hook (the codec in ``_codec.py``: per-tensor scales, packed signs,
the per-tensor chunk layout), run here on the optimizer's momenta instead of on a DDP
bucket: the hook's version is tied to ``GradBucket`` and ``CompressionState``.
"""

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

# The same class as torch.distributed.GradBucket, which mypy cannot see (it is imported
# under a runtime check in torch.distributed).
from torch._C._distributed_c10d import GradBucket
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.futures import Future
from torch.nn.parallel import DistributedDataParallel

from gradwise._validation import (
    HALF_OPEN_UNIT_INTERVAL,
    NON_NEGATIVE,
    POSITIVE_INT,
    Constraint,
    PairOf,
    Satisfies,
    check_all,
)
from gradwise.distributed._codec import (
    Chunks,
    Segments,
    chunk_layout,
    decode,
    encode,
    from_payload,
    to_payload,
)
from gradwise.distributed._hooks import check_state_keys
from gradwise.distributed._world import all_gather_flat

#: The error-feedback memories in a parameter's optimizer state.
_MEMORIES = ("worker_error", "server_error")

#: Constraints on OneBitAdam's per-group hyperparameters (also checked in add_param_group).
_GROUP_CONSTRAINTS: dict[str, Constraint] = {
    "lr": NON_NEGATIVE,
    "betas": PairOf(HALF_OPEN_UNIT_INTERVAL),
    "eps": NON_NEGATIVE,
    "weight_decay": NON_NEGATIVE,
}
_CONSTRAINTS: dict[str, Constraint] = {
    **_GROUP_CONSTRAINTS,
    "freeze_step": POSITIVE_INT,
    "process_group": Satisfies(
        lambda value: value is None or isinstance(value, dist.ProcessGroup),
        "None or a torch.distributed.ProcessGroup",
    ),
}


class OneBitAdam(torch.optim.Optimizer):
    r"""1-bit Adam: plain Adam for ``freeze_step`` steps, then frozen variance and 1-bit momentum.

    Warmup, steps :math:`t \le T` (``T = freeze_step``): torch.optim.Adam on the gradient
    :math:`g_t` that DDP averaged over the :math:`W` ranks (L2 ``weight_decay`` added to it):

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \qquad
        x_t = x_{t-1} - \eta\,\frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon}

    Compression stage, :math:`t > T`: the gradient stays on its rank (the hook of
    :func:`register_one_bit_adam` skips DDP's allreduce); each rank updates the momentum
    with its local gradient and the momenta are averaged by a 1-bit two-phase compressed
    allreduce :math:`C` with error feedback on both sides; :math:`\hat v` is frozen:

    .. math::
        m_t = C\Big(\big[\beta_1 m_{t-1} + (1-\beta_1) g_t^{(r)}\big]_{r=1..W}\Big), \qquad
        x_t = x_{t-1} - \eta\,\frac{m_t / (1-\beta_1^t)}{\sqrt{v_T / (1-\beta_2^T)} + \epsilon}

    :math:`C`: rank :math:`r` adds its error memory :math:`e_r` to its momentum, sends chunk
    :math:`s` of every tensor to rank :math:`s` as one bit per element (the sign, ``>= 0``)
    and one float32 scale per tensor chunk (its mean absolute value), keeps what the code
    dropped in :math:`e_r`; rank :math:`s` averages the :math:`W` decoded chunks, adds its
    server memory, compresses the same way (keeping the server error) and all-gathers the
    result. Every rank decodes the same bytes, so all ranks keep identical momenta and
    parameters. Bytes per rank per step, for :math:`n` elements in :math:`k` tensors:
    about :math:`n/8 + n/(8W) + 4k(W+1)`, so :math:`3n/16` on 2 ranks (21x less than an
    fp32 allreduce's :math:`4n`) and toward :math:`n/8` (32x) on many: the bits do not grow
    with :math:`W`, only the float32 scales (one per tensor chunk) do.

    Conventions: the momentum keeps Adam's bias correction :math:`1-\beta_1^t`; the
    variance's is frozen with it (DeepSpeed's OnebitAdam drops both corrections; after a
    warmup of hundreds of steps the difference vanishes). Elements whose frozen
    :math:`v_T` is exactly 0 (no gradient in the whole warmup, an unused input feature say)
    are not updated afterwards: their momentum is set to 0, since 1 bit cannot encode 0
    and :math:`\pm s / \epsilon` would blow them up (DeepSpeed asks for a mask instead).
    One step counter serves all parameters (torch keeps one per parameter; the two agree
    when every parameter has a gradient at every step); in the compression stage a
    parameter without a gradient counts as a zero gradient (so every rank sends the same
    tensors), and a parameter that had no gradient during the warmup is never updated.
    The error memories are float32 for bfloat16 and float16 parameters (in the
    parameter's dtype for float32 and float64): error feedback adds up residuals far
    below a bfloat16 parameter's resolution (8 bits of mantissa), which a memory of its
    dtype would round away; :meth:`load_state_dict` converts memories of another dtype
    (older checkpoints kept them in the parameter's).

    In one process (no initialized process group, or a world of 1) nothing is
    communicated: OneBitAdam is Adam whose :math:`\hat v` is frozen after ``freeze_step``.
    With several ranks, call :func:`register_one_bit_adam` on the DDP model (the first
    compressed step raises otherwise) and save :meth:`rank_state` per rank.

    Attributes:
        freeze_step: :math:`T`, the warmup steps.
        process_group: the group the momenta are averaged over (None: the default
            group when torch.distributed is initialized).
        num_steps: steps taken so far.
        bytes_sent: bytes this rank handed to collectives for gradients (the warmup's
            allreduce, counted by the hook) and momenta, the convention of
            :class:`~gradwise.distributed.CompressionState`: the size of the tensor passed
            to each collective (an all-to-all's whole input, an all-gather's own part).

    Args:
        params: the parameters, or parameter groups (dicts that may override ``lr``,
            ``betas``, ``eps`` and ``weight_decay``).
        lr: the learning rate :math:`\eta`, a finite float >= 0.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
        eps: :math:`\epsilon`, added after the square root, a finite float >= 0.
        weight_decay: L2 coefficient :math:`\lambda` (:math:`g \leftarrow g + \lambda x`,
            as torch.optim.Adam), a finite float >= 0.
        freeze_step: :math:`T`, Adam steps before the variance freezes, an int >= 1 (the
            paper and DeepSpeed: 15-25% of training).
        process_group: None (the default group) or a torch.distributed.ProcessGroup.

    Example:
        >>> import torch
        >>> from gradwise.distributed import OneBitAdam
        >>> model = torch.nn.Linear(4, 1)
        >>> optimizer = OneBitAdam(model.parameters(), lr=1e-2, freeze_step=3)
        >>> for _ in range(5):
        ...     optimizer.zero_grad()
        ...     model(torch.randn(8, 4)).square().mean().backward()
        ...     _ = optimizer.step()
        >>> optimizer.num_steps, optimizer.variance_frozen, optimizer.bytes_sent
        (5, True, 0)

    Reference: Tang, Gan, Awan, Rajbhandari, Li, Lian, Liu, Zhang & He, "1-bit Adam:
    Communication Efficient Large-Scale Training with Adam's Convergence Speed", ICML 2021.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        freeze_step: int = 100,
        process_group: dist.ProcessGroup | None = None,
    ) -> None:
        arguments = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "freeze_step": freeze_step,
            "process_group": process_group,
        }
        check_all("OneBitAdam", arguments, _CONSTRAINTS)
        self.freeze_step = freeze_step
        self.process_group = process_group
        self.num_steps = 0
        self.bytes_sent = 0
        self._hook_registered = False
        self._layouts: dict[tuple[tuple[int, ...], int, str], Chunks] = {}
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group (its hyperparameters are checked like the constructor's)."""
        super().add_param_group(param_group)
        check_all("OneBitAdam", self.param_groups[-1], _GROUP_CONSTRAINTS)

    @property
    def variance_frozen(self) -> bool:
        """Whether the next step is in the compression stage (``num_steps >= freeze_step``)."""
        return self.num_steps >= self.freeze_step

    @property
    def world_size(self) -> int:
        """The ranks the momenta are averaged over (1 without a process group)."""
        group = self._group()
        return 1 if group is None else dist.get_world_size(group)

    def rank_state(self) -> "OneBitAdamRankState":
        """This rank's own state (error memories, bytes_sent), to checkpoint per rank."""
        return OneBitAdamRankState(self)

    def state_dict(self) -> dict[str, Any]:
        """torch's optimizer state (per parameter: ``exp_avg``, ``exp_avg_sq``, and this
        rank's ``worker_error`` and ``server_error`` once compressing) plus ``num_steps``
        and ``bytes_sent``."""
        state = super().state_dict()
        state["one_bit_adam"] = {"num_steps": self.num_steps, "bytes_sent": self.bytes_sent}
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the error memories are the saving rank's (load each
        rank's own with ``rank_state().load_state_dict`` afterwards)."""
        saved = state_dict.get("one_bit_adam")
        if not isinstance(saved, Mapping):
            raise ValueError(
                "The 'state_dict' parameter of OneBitAdam.load_state_dict must be a "
                "OneBitAdam state (with a 'one_bit_adam' entry). Got keys "
                f"{sorted(state_dict)} instead."
            )
        # torch casts every floating state tensor to its parameter's dtype: the memories
        # go around it, to be kept at their own precision (see _memory_dtype).
        state_dict = dict(state_dict)
        memories: dict[Any, dict[str, Tensor]] = {}
        stripped = {}
        for index, entry in state_dict.get("state", {}).items():
            memories[index] = {k: v for k, v in entry.items() if k in _MEMORIES}
            stripped[index] = {k: v for k, v in entry.items() if k not in _MEMORIES}
        state_dict["state"] = stripped
        super().load_state_dict(state_dict)
        saved_indices = [index for group in state_dict["param_groups"] for index in group["params"]]
        for index, p in zip(saved_indices, _all_parameters(self), strict=True):
            for key, tensor in memories.get(index, {}).items():
                self.state[p][key] = tensor.to(device=p.device, dtype=_memory_dtype(p))
        self.num_steps = int(saved["num_steps"])
        self.bytes_sent = int(saved["bytes_sent"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter (see the class docstring); the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.variance_frozen:
            self._compressed_step()
        else:
            self._adam_step()
        self.num_steps += 1
        return loss

    # -- the two stages ------------------------------------------------------------------

    def _adam_step(self) -> None:
        t = self.num_steps + 1
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                g = _gradient(p, group["weight_decay"])
                state["exp_avg"].lerp_(g, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                _apply(p, state, group, t, t)

    def _compressed_step(self) -> None:
        params = self._stateful_parameters()
        if self.world_size > 1 and not self._hook_registered:
            raise RuntimeError(
                f"OneBitAdam on {self.world_size} ranks needs register_one_bit_adam(model, "
                "optimizer) on the DistributedDataParallel model before training (its hook "
                "averages the gradients during the warmup and skips DDP's allreduce after it)."
            )
        for group in self.param_groups:
            beta1 = group["betas"][0]
            for p in group["params"]:
                if p in self.state and self.state[p]:
                    g = _gradient(p, group["weight_decay"])
                    self.state[p]["exp_avg"].lerp_(g, 1 - beta1)  # the local momentum
        if self.world_size > 1 and params:
            self._average_momenta(params)
        t = self.num_steps + 1
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state and self.state[p]:
                    _apply(p, self.state[p], group, t, self.freeze_step)

    def _stateful_parameters(self) -> list[Tensor]:
        """The parameters with Adam state, in state_dict order (the same on every rank)."""
        return [
            p
            for group in self.param_groups
            for p in group["params"]
            if p in self.state and self.state[p]
        ]

    def _average_momenta(self, params: Sequence[Tensor]) -> None:
        lengths = tuple(p.numel() for p in params)
        chunks = self._chunk_layout(lengths, params[0].device)
        dtype = torch.promote_types(_common_dtype(params), torch.float32)
        states = [self.state[p] for p in params]
        # No memory yet (the first compressed step, or a parameter new to it): zeros.
        worker = [
            s.get("worker_error", torch.zeros_like(p)) for s, p in zip(states, params, strict=True)
        ]
        server = [
            s.get("server_error", p.new_zeros(c))
            for s, p, c in zip(states, params, chunks.chunk_lengths, strict=True)
        ]
        average, worker_error, server_error, sent = compressed_average(
            _flat([s["exp_avg"] for s in states], dtype),
            _flat(worker, dtype),
            _flat(server, dtype),
            chunks,
            self._group(),
        )
        self.bytes_sent += sent
        parts = zip(
            params,
            states,
            average.split(lengths),
            worker_error.split(lengths),
            server_error.split(list(chunks.chunk_lengths)),
            strict=True,
        )
        for p, state, momentum, worker_part, server_part in parts:
            state["exp_avg"].copy_(momentum.view_as(p))
            state["worker_error"] = worker_part.view_as(p).to(_memory_dtype(p))
            state["server_error"] = server_part.to(_memory_dtype(p))

    def _chunk_layout(self, lengths: tuple[int, ...], device: torch.device) -> Chunks:
        key = (lengths, self.world_size, str(device))
        if key not in self._layouts:
            self._layouts[key] = chunk_layout(lengths, self.world_size, device)
        return self._layouts[key]

    def _group(self) -> dist.ProcessGroup | None:
        if self.process_group is not None:
            return self.process_group
        if dist.is_available() and dist.is_initialized():
            return dist.group.WORLD
        return None


def _memory_dtype(p: Tensor) -> torch.dtype:
    """The dtype of ``p``'s error memories: float32 for a 16-bit parameter, else its own."""
    return torch.promote_types(p.dtype, torch.float32)


def _gradient(p: Tensor, weight_decay: float) -> Tensor:
    """``p``'s gradient (zeros if it has none) plus the L2 term ``weight_decay * p``."""
    grad = torch.zeros_like(p) if p.grad is None else p.grad
    if grad.is_sparse:
        raise RuntimeError("OneBitAdam does not support sparse gradients.")
    return grad.add(p, alpha=weight_decay) if weight_decay else grad


def _apply(p: Tensor, state: dict[str, Any], group: Mapping[str, Any], t: int, t_v: int) -> None:
    """``x -= lr (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t_v)) + eps)``.

    ``t_v`` is ``t`` during the warmup and ``freeze_step`` afterwards, when elements with
    ``v == 0`` (no gradient in the whole warmup) keep a zero momentum and stay put.
    """
    beta1, beta2 = group["betas"]
    m, v = state["exp_avg"], state["exp_avg_sq"]
    if t_v < t:
        m.masked_fill_(v == 0, 0.0)
    denom = (v.sqrt() / math.sqrt(1 - beta2**t_v)).add_(group["eps"])
    p.addcdiv_(m, denom, value=-group["lr"] / (1 - beta1**t))


def _common_dtype(params: Sequence[Tensor]) -> torch.dtype:
    dtype = params[0].dtype
    for p in params[1:]:
        dtype = torch.promote_types(dtype, p.dtype)
    return dtype


def _flat(tensors: Sequence[Tensor], dtype: torch.dtype) -> Tensor:
    return torch.cat([t.reshape(-1).to(dtype) for t in tensors])


def compressed_average(
    x: Tensor,
    worker_error: Tensor,
    server_error: Tensor,
    chunks: Chunks,
    group: dist.ProcessGroup | None,
) -> tuple[Tensor, Tensor, Tensor, int]:
    """The two-phase 1-bit average of a flat tensor over the ranks of ``group``.

    ``x`` and ``worker_error`` hold the concatenated tensors (``chunks`` from
    ``chunk_layout`` of their sizes), ``server_error`` the concatenated chunks this rank
    serves. Returns the average (the same on every rank), the new memories, and the bytes
    this rank handed to the two collectives.
    """
    world_size, rank = dist.get_world_size(group), dist.get_rank(group)
    dtype, segments = x.dtype, chunks.segments

    # Phase 1: compress x + e_worker, chunk s of every tensor for rank s.
    p = x + worker_error
    rows = torch.cat([p, p.new_zeros(1)])[chunks.gather_index].reshape(world_size, -1)
    scales, packed = encode(rows, segments)  # (W, k), (W, ceil(L / 8))
    new_worker_error = p - decode(scales, packed, segments, dtype).reshape(-1)[chunks.inverse]
    payload = to_payload(scales, packed)  # (W, 4k + ceil(L / 8)) uint8
    received = torch.empty_like(payload)  # row s: our chunk, from rank s
    dist.all_to_all_single(received.reshape(-1), payload.reshape(-1), group=group)

    # Server: average our chunk over the senders, add e_server, compress again.
    valid = chunks.valid[rank].to(dtype)
    own = Segments(segments.segment_of, segments.counts[rank : rank + 1])
    sender_scales, sender_packed = from_payload(received, segments.num_segments)
    server_p = decode(sender_scales, sender_packed, segments, dtype).mean(dim=0) * valid
    server_p = server_p + server_error
    server_scales, server_packed = encode(server_p.unsqueeze(0), own)
    new_server_error = server_p - decode(server_scales, server_packed, own, dtype)[0] * valid

    # Phase 2: every rank gathers every server's compressed chunk.
    server_payload = to_payload(server_scales, server_packed)[0]
    gathered = server_payload.new_empty(world_size * server_payload.numel())
    all_gather_flat(gathered, server_payload, group=group)
    chunk_scales, chunk_packed = from_payload(
        gathered.reshape(world_size, -1), segments.num_segments
    )
    average = decode(chunk_scales, chunk_packed, segments, dtype).reshape(-1)[chunks.inverse]
    sent = payload.numel() + server_payload.numel()
    return average, new_worker_error, new_server_error, sent


class OneBitAdamRankState:
    r"""The part of a :class:`OneBitAdam`'s state that differs between ranks.

    The momentum, variance and step are the same on every rank (they are in the
    optimizer's ``state_dict``); the error-feedback memories and ``bytes_sent`` are each
    rank's own. A checkpoint that keeps only rank 0's optimizer state must also keep every
    rank's ``rank_state().state_dict()``, loaded AFTER the optimizer's state (which
    carries rank 0's memories). The gradwise Trainer does this with
    ``Trainer(..., rank_state=register_one_bit_adam(model, optimizer))``.

    ``state_dict()`` holds ``world_size``, ``bytes_sent``, and ``worker_error`` and
    ``server_error``: dicts from the parameter's index (its index in the optimizer's
    ``state_dict``) to a tensor (``server_error``: the :math:`\lceil d/W \rceil` elements of
    the chunk this rank serves, so a resume needs the same world size).

    Example:
        >>> import torch
        >>> from gradwise.distributed import OneBitAdam
        >>> optimizer = OneBitAdam(torch.nn.Linear(4, 1).parameters(), freeze_step=10)
        >>> sorted(optimizer.rank_state().state_dict())
        ['bytes_sent', 'server_error', 'worker_error', 'world_size']
    """

    def __init__(self, optimizer: OneBitAdam, process_group: dist.ProcessGroup | None = None):
        self.optimizer = optimizer
        self.process_group = process_group

    def state_dict(self) -> dict[str, Any]:
        """This rank's error memories (by parameter index), bytes_sent and world size."""
        optimizer = self.optimizer
        memories: dict[str, dict[int, Tensor]] = {"worker_error": {}, "server_error": {}}
        for index, p in enumerate(_all_parameters(optimizer)):
            for key, memory in memories.items():
                if key in optimizer.state.get(p, {}):
                    memory[index] = optimizer.state[p][key].detach().clone()
        return {"world_size": optimizer.world_size, "bytes_sent": optimizer.bytes_sent, **memories}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore this rank's memories saved by :meth:`state_dict` (same world size)."""
        optimizer = self.optimizer
        owner = "OneBitAdamRankState.load_state_dict"
        check_state_keys(
            state_dict,
            ("world_size", "bytes_sent", "worker_error", "server_error"),
            owner,
            "OneBitAdamRankState.state_dict()",
        )
        if state_dict["server_error"] and state_dict["world_size"] != optimizer.world_size:
            raise ValueError(
                f"The 'state_dict' parameter of {owner} must come from a run with world size "
                f"{optimizer.world_size} (the server memory is one chunk per rank). Got world "
                f"size {state_dict['world_size']} instead; resume on "
                f"{state_dict['world_size']} ranks."
            )
        params = _all_parameters(optimizer)
        loaded = {
            key: _checked_memory(state_dict[key], params, size, key, owner)
            for key, size in (("worker_error", 1), ("server_error", optimizer.world_size))
        }
        for index, tensor in loaded["worker_error"].items():
            p = params[index]
            memory = tensor.to(device=p.device, dtype=_memory_dtype(p))
            optimizer.state[p]["worker_error"] = memory.view_as(p)
        for index, tensor in loaded["server_error"].items():
            p = params[index]
            memory = tensor.to(device=p.device, dtype=_memory_dtype(p))
            optimizer.state[p]["server_error"] = memory.reshape(-1)
        optimizer.bytes_sent = int(state_dict["bytes_sent"])


def _all_parameters(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _checked_memory(
    memory: Any, params: Sequence[Tensor], world_size: int, key: str, owner: str
) -> dict[int, Tensor]:
    if not isinstance(memory, Mapping):
        raise ValueError(
            f"The 'state_dict' parameter of {owner} must hold {key} memories in a dict keyed "
            f"by parameter index. Got a {type(memory).__name__} instead; load a state saved "
            "by OneBitAdamRankState.state_dict()."
        )
    checked = {}
    for index, tensor in memory.items():
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(params):
            raise ValueError(
                f"The 'state_dict' parameter of {owner} must hold {key} memories keyed by "
                f"parameter index, an int from 0 to {len(params) - 1}. Got {index!r} instead."
            )
        expected = math.ceil(params[index].numel() / world_size)
        if not isinstance(tensor, Tensor) or tensor.numel() != expected:
            got = f"{tensor.numel()} elements" if isinstance(tensor, Tensor) else repr(tensor)
            where = f"on {world_size} ranks, " if key == "server_error" else ""
            raise ValueError(
                f"The 'state_dict' parameter of {owner} must hold a {key} of {expected} "
                f"elements for parameter {index} (of shape {tuple(params[index].shape)}). Got "
                f"{got} instead; load this rank's state saved {where}for an optimizer over "
                "parameters of the same shapes, in the same order."
            )
        checked[int(index)] = tensor.detach().clone()
    return checked


def register_one_bit_adam(
    model: DistributedDataParallel, optimizer: OneBitAdam
) -> OneBitAdamRankState:
    r"""Register 1-bit Adam's DDP communication hook; return the rank's state to checkpoint.

    The hook averages the gradients with DDP's plain allreduce (in the gradients' dtype)
    while ``optimizer.variance_frozen`` is False (the warmup: ``num_steps < freeze_step``), and
    afterwards hands DDP each rank's LOCAL gradient, communicating nothing: the optimizer
    then averages compressed momenta instead. Gradient bytes are added to
    ``optimizer.bytes_sent`` (:math:`4n` per warmup step for float32 parameters).

    Args:
        model: the DistributedDataParallel model (no hook registered yet).
        optimizer: a :class:`OneBitAdam` over the model's parameters, on a process group
            of the same size as the model's.

    Returns:
        The optimizer's :class:`OneBitAdamRankState`: pass it to the Trainer as
        ``rank_state`` (or save its ``state_dict()`` per rank yourself).

    Example:
        >>> import os, tempfile, torch, torch.distributed as dist
        >>> from torch.nn.parallel import DistributedDataParallel
        >>> from gradwise.distributed import OneBitAdam, register_one_bit_adam
        >>> init = "file://" + os.path.join(tempfile.mkdtemp(), "init")
        >>> dist.init_process_group("gloo", init_method=init, rank=0, world_size=1)
        >>> model = DistributedDataParallel(torch.nn.Linear(4, 2))
        >>> optimizer = OneBitAdam(model.parameters(), freeze_step=2)
        >>> rank_state = register_one_bit_adam(model, optimizer)
        >>> for _ in range(3):
        ...     optimizer.zero_grad()
        ...     model(torch.randn(8, 4)).square().mean().backward()
        ...     _ = optimizer.step()
        >>> optimizer.bytes_sent  # 2 warmup allreduces of 10 float32; none afterwards
        80
        >>> dist.destroy_process_group()

    Reference: Tang et al., "1-bit Adam: Communication Efficient Large-Scale Training with
    Adam's Convergence Speed", ICML 2021.
    """
    if not isinstance(model, DistributedDataParallel):
        raise TypeError(
            "The 'model' parameter of register_one_bit_adam must be a "
            f"torch.nn.parallel.DistributedDataParallel. Got a {type(model).__name__} instead."
        )
    if not isinstance(optimizer, OneBitAdam):
        raise TypeError(
            "The 'optimizer' parameter of register_one_bit_adam must be a OneBitAdam. Got a "
            f"{type(optimizer).__name__} instead."
        )
    model_size = dist.get_world_size(model.process_group)
    if optimizer.world_size != model_size:
        raise ValueError(
            "The 'optimizer' parameter of register_one_bit_adam must average over as many "
            f"ranks as the model ({model_size}). Got a OneBitAdam on {optimizer.world_size} "
            "instead."
        )
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if trainable != {id(p) for p in _all_parameters(optimizer)}:
        raise ValueError(
            "The 'optimizer' parameter of register_one_bit_adam must optimize every trainable "
            "parameter of the model and nothing else (after the freeze the hook leaves all "
            "gradients unaveraged). Got a OneBitAdam over other tensors instead."
        )
    state = OneBitAdamRankState(optimizer, model.process_group)
    model.register_comm_hook(state, _one_bit_adam_hook)
    optimizer._hook_registered = True
    return state


def _one_bit_adam_hook(state: OneBitAdamRankState, bucket: GradBucket) -> Future[torch.Tensor]:
    buffer = bucket.buffer()
    if state.optimizer.variance_frozen:
        local: Future[Tensor] = Future()
        local.set_result(buffer)
        return local
    state.optimizer.bytes_sent += buffer.numel() * buffer.element_size()
    return default_hooks.allreduce_hook(state.process_group, bucket)  # type: ignore[arg-type]
