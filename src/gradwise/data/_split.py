"""Seeded, stratified hold-out splits."""

from __future__ import annotations

import torch
from torch import Tensor

from gradwise._validation import Interval, check
from gradwise.data._dataset import Dataset

SEED = Interval(low=0.0, high=float(2**32 - 1), kind="int")
OPEN_FRACTION = Interval(low=0.0, high=1.0, low_closed=False, high_closed=False)


def split_dataset(dataset: Dataset, fraction: float, *, seed: int = 0) -> tuple[Dataset, Dataset]:
    r"""Hold out ``fraction`` of the samples: returns ``(rest, held_out)``.

    The held-out split has :math:`n = \lfloor f N + 1/2 \rfloor` samples. For
    classification it is stratified: class :math:`c` with :math:`N_c` samples gives
    :math:`\lfloor n N_c / N \rfloor` or one more (largest remainders first, ties to the
    lower class index), so each class's share is within one sample of exact. Which samples
    of a class are held out is decided by ``torch.randperm`` seeded with ``seed``; both
    splits keep the original order of their samples. Regression splits are a plain seeded
    random draw.

    Args:
        dataset: the samples to split.
        fraction: the share to hold out, in (0, 1).
        seed: an int in [0, 2**32 - 1]; the same seed gives the same split.

    Example:
        >>> import torch
        >>> from gradwise.data import Dataset, split_dataset
        >>> data = Dataset(torch.randn(10, 2), torch.tensor([0] * 5 + [1] * 5))
        >>> rest, held_out = split_dataset(data, 0.2, seed=0)
        >>> len(rest), sorted(held_out.targets.tolist())
        (8, [0, 1])
    """
    check("fraction", "split_dataset", fraction, OPEN_FRACTION)
    check("seed", "split_dataset", seed, SEED)
    if not isinstance(dataset, Dataset):
        raise TypeError(
            "The 'dataset' parameter of split_dataset must be a gradwise.data.Dataset. "
            f"Got {type(dataset).__name__} instead."
        )
    return hold_out(dataset, fraction, int(seed), owner="split_dataset")


def hold_out(
    dataset: Dataset,
    fraction: float,
    generator_seed: int,
    *,
    owner: str,
    parameter: str = "",
    remaining: str = "",
) -> tuple[Dataset, Dataset]:
    """:func:`split_dataset` without the argument checks, for any 63-bit generator seed.

    ``parameter`` names the fraction in the error (``"test_split"``), ``remaining`` says
    which samples these are (``" left after the test split"``)."""
    size = len(dataset)
    count = int(fraction * size + 0.5)
    if count == 0 or count == size:
        empty = "the held-out split" if count == 0 else "the rest"
        given = f"{parameter}={fraction!r}" if parameter else repr(fraction)
        split = parameter.removesuffix("_split")
        no_split = f", or {parameter}=0 for no {split} split" if parameter else ""
        raise ValueError(
            f"{owner} cannot hold out {given} of {size} samples{remaining}: one split would be "
            f"empty ({empty}: {fraction!r} * {size} rounds to {count}). Use a larger dataset "
            f"or a fraction that leaves samples on both sides{no_split}."
        )
    generator = torch.Generator().manual_seed(generator_seed)
    permutation = torch.randperm(size, generator=generator)
    targets = dataset.targets.cpu()
    if dataset.task == "classification":
        mask = _stratified_mask(targets, permutation, count, owner)
    else:
        mask = torch.zeros(size, dtype=torch.bool)
        mask[permutation[:count]] = True
    rest = torch.nonzero(~mask).squeeze(1)
    held_out = torch.nonzero(mask).squeeze(1)
    return dataset.subset(rest), dataset.subset(held_out)


def _stratified_mask(targets: Tensor, permutation: Tensor, count: int, owner: str) -> Tensor:
    if int(targets.min()) < 0:
        raise ValueError(
            f"{owner} needs class indices >= 0 to stratify. Got {int(targets.min())} instead."
        )
    size = targets.numel()
    class_sizes = torch.bincount(targets)
    quotas = _class_quotas(class_sizes, count)
    # Group the samples by class while keeping the seeded order within each class; the
    # first quotas[c] samples of class c in that order are held out. No loop over samples.
    order = permutation[torch.argsort(targets[permutation], stable=True)]
    labels = targets[order]
    class_starts = torch.cumsum(class_sizes, 0) - class_sizes
    rank_in_class = torch.arange(size) - class_starts[labels]
    mask = torch.zeros(size, dtype=torch.bool)
    mask[order[rank_in_class < quotas[labels]]] = True
    return mask


def _class_quotas(class_sizes: Tensor, count: int) -> Tensor:
    """Largest-remainder apportionment of ``count`` samples in proportion to class sizes."""
    size = int(class_sizes.sum())
    scaled = class_sizes * count  # exact integers: quota_c = scaled_c / size
    quotas = scaled // size
    remainders = scaled % size
    missing = count - int(quotas.sum())
    by_remainder = torch.argsort(-remainders, stable=True)
    quotas[by_remainder[:missing]] += 1
    return quotas
