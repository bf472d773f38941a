"""Distributed data-parallel training on torch's DDP, with gradient compression hooks.

``gradwise train CONFIG --nproc N`` trains in N processes on this machine (:func:`launch`,
on torch's elastic agent); ``torchrun ... -m gradwise train CONFIG`` across machines. The
Trainer sees the process group as a :class:`World`. See docs/distributed.md.

:func:`register_compression` registers one of :data:`COMPRESSIONS` as a DDP communication
hook and returns its :class:`CompressionState` (error memories, bytes sent, checkpoint
state). :func:`pack_bits` / :func:`unpack_bits` are the 1-bit codes' bit packing.
"""

from gradwise.distributed._bits import pack_bits, unpack_bits
from gradwise.distributed._hooks import (
    COMPRESSION_OPTIONS,
    COMPRESSIONS,
    CompressionState,
    register_compression,
)
from gradwise.distributed._launch import RankFailed, launch
from gradwise.distributed._one_bit_adam import (
    OneBitAdam,
    OneBitAdamRankState,
    register_one_bit_adam,
)
from gradwise.distributed._world import World

__all__ = [
    "COMPRESSIONS",
    "COMPRESSION_OPTIONS",
    "CompressionState",
    "OneBitAdam",
    "OneBitAdamRankState",
    "RankFailed",
    "World",
    "launch",
    "pack_bits",
    "register_compression",
    "register_one_bit_adam",
    "unpack_bits",
]
