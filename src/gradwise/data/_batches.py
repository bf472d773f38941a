"""Minibatches of an in-memory dataset by tensor indexing: reshuffled per epoch, resumable."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from gradwise._validation import NON_NEGATIVE_INT, POSITIVE_INT, Boolean, check
from gradwise.data._dataset import Dataset
from gradwise.data._seeding import mix_seed
from gradwise.data._split import SEED

Batch = tuple[Tensor, Tensor]


class Batches:
    """Minibatches of ``dataset``, drawn in a fresh order every epoch.

    The order of epoch ``e`` is ``torch.randperm(N, generator=torch.Generator()
    .manual_seed(mix_seed(seed, e)))`` on the CPU (``mix_seed`` is splitmix64 of
    ``seed * 0x9E3779B97F4A7C15 + e + 1``, see docs/data.md), so it depends only on
    ``(seed, epoch)``: the same on every device and in every process, with no iterator
    state to checkpoint. Batch ``b`` holds the samples at positions ``b * batch_size`` to
    ``(b + 1) * batch_size`` of that order, gathered with one ``index_select`` per tensor
    (no DataLoader, no Python loop over samples). A run resumed at ``(epoch, batch)`` calls
    ``epoch(epoch, start_batch=batch)`` and sees exactly the batches it would have seen.

    Args:
        dataset: the samples.
        batch_size: samples per batch; the last batch of an epoch may be smaller.
        shuffle: reshuffle every epoch; ``False`` keeps the dataset's order.
        drop_last: drop the last batch of an epoch when it is smaller than ``batch_size``.
        min_last_batch_size: drop the last batch of an epoch when it is smaller than
            ``batch_size`` and holds fewer than this many samples (the Trainer's 2: batch
            norm cannot train on 1 sample); 1 keeps every last batch.
        seed: an int in [0, 2**32 - 1].
        device: move the whole dataset there once, up front; batches are gathered there.

    Example:
        >>> import torch
        >>> from gradwise.data import Batches, Dataset
        >>> data = Dataset(torch.arange(10.0).reshape(10, 1), torch.arange(10))
        >>> batches = Batches(data, batch_size=4, seed=0)
        >>> len(batches), [len(targets) for _, targets in batches.epoch(0)]
        (3, [4, 4, 2])
        >>> len(Batches(data, batch_size=3, min_last_batch_size=2, seed=0))  # 3 + 3 + 3 (+ 1)
        3
        >>> resumed = [t.tolist() for _, t in batches.epoch(0, start_batch=1)]
        >>> resumed == [t.tolist() for _, t in batches.epoch(0)][1:]
        True
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        min_last_batch_size: int = 1,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        _check_dataset("Batches", dataset)
        check("batch_size", "Batches", batch_size, POSITIVE_INT)
        check("shuffle", "Batches", shuffle, Boolean())
        check("drop_last", "Batches", drop_last, Boolean())
        check("min_last_batch_size", "Batches", min_last_batch_size, POSITIVE_INT)
        check("seed", "Batches", seed, SEED)
        if drop_last and batch_size > len(dataset):
            raise ValueError(
                f"The 'batch_size' parameter of Batches must be <= the {len(dataset)} samples "
                f"when drop_last=True, or every batch is dropped. Got {batch_size} instead."
            )
        # A full batch is never dropped: batch_size samples are enough whatever the minimum.
        needed = min(int(batch_size), int(min_last_batch_size))
        if len(dataset) < needed:
            raise ValueError(
                f"The 'dataset' parameter of Batches must hold {needed} samples "
                f"or more with min_last_batch_size={min_last_batch_size} and batch_size "
                f"{batch_size}, or its one batch is dropped. Got {len(dataset)} instead."
            )
        self.dataset = dataset if device is None else dataset.to(device)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.min_last_batch_size = int(min_last_batch_size)
        self.seed = int(seed)

    def __len__(self) -> int:
        """Batches per epoch."""
        full, last = divmod(len(self.dataset), self.batch_size)
        kept = last > 0 and not self.drop_last and last >= self.min_last_batch_size
        return full + int(kept)

    def order(self, epoch: int) -> Tensor:
        """The sample indices of epoch ``epoch``, in the order they are served (on the CPU)."""
        check("epoch", "Batches.order", epoch, NON_NEGATIVE_INT)
        size = len(self.dataset)
        if not self.shuffle:
            return torch.arange(size)
        generator = torch.Generator().manual_seed(mix_seed(self.seed, int(epoch)))
        return torch.randperm(size, generator=generator)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """The ``(inputs, targets)`` batches of epoch ``epoch``, from batch ``start_batch`` on."""
        check("epoch", "Batches.epoch", epoch, NON_NEGATIVE_INT)
        check("start_batch", "Batches.epoch", start_batch, NON_NEGATIVE_INT)
        if start_batch > len(self):
            raise ValueError(
                f"The 'start_batch' parameter of Batches.epoch must be <= {len(self)}, the "
                f"number of batches per epoch. Got {start_batch} instead."
            )
        # Checked here, not inside the generator, so a bad argument fails at the call.
        return self._serve(int(epoch), int(start_batch))

    def _serve(self, epoch: int, start_batch: int) -> Iterator[Batch]:
        inputs, targets = self.dataset.inputs, self.dataset.targets
        size, step = len(self.dataset), self.batch_size
        if not self.shuffle:
            for begin in range(start_batch * step, len(self) * step, step):
                yield inputs[begin : begin + step], targets[begin : begin + step]
            return
        order = self.order(epoch).to(inputs.device)
        for begin in range(start_batch * step, min(len(self) * step, size), step):
            index = order[begin : begin + step]
            yield inputs.index_select(0, index), targets.index_select(0, index)


def iterate_once(
    dataset: Dataset, batch_size: int, *, device: torch.device | str | None = None
) -> Iterator[Batch]:
    """The ``(inputs, targets)`` batches of ``dataset`` in order, each once: for evaluation.

    Batches are views (slices) of the dataset's tensors, moved to ``device`` if given; the
    last one may be smaller.

    Example:
        >>> import torch
        >>> from gradwise.data import Dataset, iterate_once
        >>> data = Dataset(torch.zeros(5, 2), torch.zeros(5, dtype=torch.int64))
        >>> [len(targets) for _, targets in iterate_once(data, 2)]
        [2, 2, 1]
    """
    _check_dataset("iterate_once", dataset)
    check("batch_size", "iterate_once", batch_size, POSITIVE_INT)
    return _slices(dataset, int(batch_size), device)


def _slices(
    dataset: Dataset, batch_size: int, device: torch.device | str | None
) -> Iterator[Batch]:
    for begin in range(0, len(dataset), batch_size):
        inputs = dataset.inputs[begin : begin + batch_size]
        targets = dataset.targets[begin : begin + batch_size]
        if device is not None:
            inputs, targets = inputs.to(device), targets.to(device)
        yield inputs, targets


def _check_dataset(owner: str, dataset: object) -> None:
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"The 'dataset' parameter of {owner} must be a gradwise.data.Dataset. "
            f"Got {type(dataset).__name__} instead."
        )
