"""The scaled-sign codec of the 1-bit hooks, and where each gradient element travels.

A flat gradient is viewed as a ``(rows, length)`` matrix whose columns fall into segments
(one segment per parameter tensor). A row is encoded as one float32 scale per segment (the
mean absolute value of the segment's elements) and one bit per element (``x >= 0``), and
decoded as ``scale * (+1 or -1)``. Pure tensor code: no collectives, no Python loop over
elements, the same on CPU and GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gradwise.distributed._bits import pack_bits, unpack_bits

#: Bytes of one scale on the wire (float32).
SCALE_BYTES = 4


@dataclass(frozen=True)
class Segments:
    """Columns split into contiguous segments, each with its own scale.

    ``segment_of`` (length,) int64 gives each column's segment; ``counts`` (rows,
    num_segments) the number of real (not padding) elements each segment has in each row,
    the divisor of its mean.
    """

    segment_of: Tensor
    counts: Tensor

    @property
    def num_segments(self) -> int:
        return int(self.counts.shape[-1])

    @property
    def length(self) -> int:
        return int(self.segment_of.numel())


@dataclass(frozen=True)
class Chunks:
    """A bucket cut into one chunk per rank, for the two-phase allreduce.

    Each tensor of ``d`` elements is split into ``world_size`` chunks of
    ``c = ceil(d / world_size)`` elements (the last ones padded with zeros); chunk ``r`` of
    the bucket is chunk ``r`` of every tensor, one after the other, ``length = sum(c)``
    elements in all. Because the cut is per tensor, which rank serves an element does not
    depend on how DDP groups tensors into buckets (which changes after DDP's first
    iteration, so also on the first step of a resumed run).

    ``gather_index`` (world_size * length,) picks the elements of the flat bucket (index
    ``numel`` for padding, a zero appended to it), row by row; ``inverse`` (numel,) picks
    each bucket element back out of the flattened ``(world_size, length)`` matrix;
    ``valid`` (world_size, length) is False on padding; ``segments`` has one segment per
    tensor and per-row counts; ``chunk_lengths`` is each tensor's ``c``.
    """

    gather_index: Tensor
    inverse: Tensor
    valid: Tensor
    segments: Segments
    chunk_lengths: tuple[int, ...]


def tensor_segments(lengths: Sequence[int], device: torch.device) -> Segments:
    """One segment per tensor of a flat bucket, one row: scale per tensor."""
    sizes = torch.tensor(lengths, dtype=torch.int64, device=device)
    segment_of = torch.repeat_interleave(torch.arange(len(lengths), device=device), sizes)
    return Segments(segment_of, sizes.reshape(1, -1))


def chunk_layout(lengths: Sequence[int], world_size: int, device: torch.device) -> Chunks:
    """Where each element of a bucket with tensors of ``lengths`` goes in the two phases."""
    sizes = torch.tensor(lengths, dtype=torch.int64, device=device)
    chunk = (sizes + world_size - 1) // world_size  # (tensors,) c per tensor
    segment_of = torch.repeat_interleave(torch.arange(len(lengths), device=device), chunk)
    block_start = torch.cumsum(chunk, 0) - chunk  # first column of each tensor's block
    tensor_start = torch.cumsum(sizes, 0) - sizes  # first element of each tensor
    column = torch.arange(segment_of.numel(), device=device) - block_start[segment_of]
    rank = torch.arange(world_size, device=device).reshape(-1, 1)
    within = rank * chunk[segment_of] + column  # (world, length) index within its tensor
    valid = within < sizes[segment_of]
    numel = int(sizes.sum())
    gather_index = torch.where(valid, tensor_start[segment_of] + within, numel).reshape(-1)
    inverse = torch.empty(numel, dtype=torch.int64, device=device)
    inverse[gather_index[valid.reshape(-1)]] = torch.nonzero(valid.reshape(-1)).reshape(-1)
    counts = torch.clamp(sizes - rank * chunk, min=0).minimum(chunk)  # (world, tensors)
    return Chunks(
        gather_index,
        inverse,
        valid,
        Segments(segment_of, counts),
        tuple(int(c) for c in chunk.tolist()),
    )


def segment_scales(x: Tensor, segments: Segments) -> Tensor:
    """The float32 mean of ``|x|`` over each segment's real elements: (rows, segments).

    It is 0 for a segment whose elements are all 0 (and only then, unless the mean
    underflows float32), which ``sign_majority`` reads as the rank's abstention.
    """
    sums = x.new_zeros(x.shape[0], segments.num_segments).index_add_(
        1, segments.segment_of, x.abs()
    )
    return (sums / segments.counts.clamp(min=1).to(x.dtype)).to(torch.float32)


def encode(x: Tensor, segments: Segments, *, two_level: bool = False) -> tuple[Tensor, Tensor]:
    """Rows ``x`` (rows, length) to float32 scales (rows, segments) and packed signs.

    The scale is the mean of ``|x|`` over the segment's real elements (padding holds
    zeros, so it adds nothing to the sum); the bit is ``x >= 0``. With ``two_level``
    (Seide et al. 2014's reconstruction values) each segment has two scales, (rows,
    2 segments): the mean of its real elements ``>= 0``, then the mean of ``|x|`` over its
    negative elements (0 for a segment without any).
    """
    bits = x >= 0
    if not two_level:
        return segment_scales(x, segments), pack_bits(bits)
    parts = torch.cat([x.clamp(min=0), (-x).clamp(min=0), bits.to(x.dtype)])
    rows = x.shape[0]
    sums = x.new_zeros(3 * rows, segments.num_segments).index_add_(1, segments.segment_of, parts)
    positive, negative, nonnegative_count = sums.split(rows)
    # Padding holds zeros, which count as >= 0: take them out of that count.
    sizes = torch.bincount(segments.segment_of, minlength=segments.num_segments)
    counts = segments.counts.to(x.dtype)
    nonnegative_count = nonnegative_count - (sizes.to(x.dtype) - counts)
    negative_count = counts - nonnegative_count
    scales = torch.cat(
        [positive / nonnegative_count.clamp(min=1), negative / negative_count.clamp(min=1)], dim=1
    )
    return scales.to(torch.float32), pack_bits(bits)


def decode(
    scales: Tensor,
    packed: Tensor,
    segments: Segments,
    dtype: torch.dtype,
    *,
    two_level: bool = False,
) -> Tensor:
    """``scale * (+1 if bit else -1)`` per element: (rows, length) in ``dtype``.

    With ``two_level`` the scales are :func:`encode`'s two per segment: the first for a
    1 bit, the second (negated) for a 0 bit.
    """
    scales = scales.to(dtype)
    positive = scales[:, segments.segment_of]
    negative = positive
    if two_level:
        negative = scales[:, segments.num_segments :][:, segments.segment_of]
    return torch.where(unpack_bits(packed, segments.length), positive, -negative)


def to_payload(scales: Tensor, packed: Tensor) -> Tensor:
    """One uint8 row per rank: the float32 scales' bytes, then the packed bits."""
    return torch.cat([scales.contiguous().view(torch.uint8), packed], dim=1)


def from_payload(payload: Tensor, num_segments: int) -> tuple[Tensor, Tensor]:
    """The inverse of :func:`to_payload`: (scales float32, packed bits)."""
    scale_bytes = SCALE_BYTES * num_segments
    # Copied to a fresh tensor: view(float32) needs 4-byte aligned rows, and a row of the
    # payload is 4k + ceil(length / 8) bytes long.
    scale_rows = payload.new_empty(payload.shape[0], scale_bytes).copy_(payload[:, :scale_bytes])
    scales = scale_rows.view(torch.float32)
    return scales, payload[:, scale_bytes:]
