"""Bit packing: 8 booleans per uint8, with torch ops only (CPU and GPU alike)."""

from __future__ import annotations

import torch
from torch import Tensor

from gradwise._validation import NON_NEGATIVE_INT, check

# Bit j of a byte holds element 8 i + j, most significant bit first (numpy.packbits'
# default order, so ``np.unpackbits`` reads what this writes).
_SHIFTS = (7, 6, 5, 4, 3, 2, 1, 0)


def pack_bits(bits: Tensor) -> Tensor:
    r"""Pack a bool tensor into uint8, 8 values per byte, along the last dimension.

    A last dimension of :math:`n` becomes :math:`\lceil n/8 \rceil` bytes; the last byte is
    padded with zeros. Element :math:`8i + j` is bit :math:`7 - j` of byte :math:`i` (most
    significant bit first, as ``numpy.packbits``). Vectorized: one shift and one sum over
    a ``(..., n/8, 8)`` view, no Python loop over elements.

    Args:
        bits: a bool tensor of any shape (the last dimension is packed; a 0-d tensor is
            treated as one element).

    Returns:
        A uint8 tensor shaped ``(*bits.shape[:-1], ceil(n / 8))``, on ``bits``' device.

    Example:
        >>> import torch
        >>> from gradwise.distributed import pack_bits
        >>> pack_bits(torch.tensor([True, False, False, False, False, False, False, True, True]))
        tensor([129, 128], dtype=torch.uint8)
    """
    _check_dtype("bits", "pack_bits", bits, torch.bool)
    if bits.dim() == 0:
        bits = bits.reshape(1)
    length = bits.shape[-1]
    padding = -length % 8
    if padding:
        bits = torch.nn.functional.pad(bits.to(torch.uint8), (0, padding))
    grouped = bits.to(torch.uint8).reshape(*bits.shape[:-1], -1, 8)  # (..., bytes, 8)
    shifts = torch.tensor(_SHIFTS, dtype=torch.uint8, device=bits.device)
    # The shifted bits are disjoint, so their sum is their bitwise or and stays < 256.
    return torch.bitwise_left_shift(grouped, shifts).sum(dim=-1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, num_bits: int) -> Tensor:
    r"""Unpack uint8 bytes into booleans along the last dimension: the inverse of :func:`pack_bits`.

    Args:
        packed: a uint8 tensor whose last dimension holds :math:`\lceil n/8 \rceil` bytes
            (or more).
        num_bits: :math:`n`, the number of booleans to return per row; the padding bits
            of the last byte are dropped.

    Returns:
        A bool tensor shaped ``(*packed.shape[:-1], num_bits)``.

    Example:
        >>> import torch
        >>> from gradwise.distributed import pack_bits, unpack_bits
        >>> bits = torch.rand(3, 13) < 0.5
        >>> bool((unpack_bits(pack_bits(bits), 13) == bits).all())
        True
    """
    _check_dtype("packed", "unpack_bits", packed, torch.uint8)
    check("num_bits", "unpack_bits", num_bits, NON_NEGATIVE_INT)
    available = 8 * packed.shape[-1] if packed.dim() > 0 else 8
    packed = packed.reshape(1) if packed.dim() == 0 else packed
    if num_bits > available:
        raise ValueError(
            f"The 'num_bits' parameter of unpack_bits must be an int <= {available} (8 bits "
            f"per byte of 'packed'). Got {num_bits!r} instead."
        )
    shifts = torch.tensor(_SHIFTS, dtype=torch.uint8, device=packed.device)
    bits = torch.bitwise_right_shift(packed.unsqueeze(-1), shifts) & 1  # (..., bytes, 8)
    return bits.reshape(*packed.shape[:-1], -1)[..., :num_bits].bool()


def _check_dtype(name: str, owner: str, value: object, dtype: torch.dtype) -> None:
    if isinstance(value, Tensor) and value.dtype == dtype:
        return
    got = f"a {value.dtype} tensor" if isinstance(value, Tensor) else repr(value)
    raise ValueError(
        f"The '{name}' parameter of {owner} must be a {dtype} tensor. Got {got} instead."
    )
