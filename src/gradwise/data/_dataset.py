"""The in-memory dataset and its train/validation/test splits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from gradwise._validation import NON_NEGATIVE_INT, Satisfies, check

Task = Literal["classification", "regression"]
TASKS: tuple[Task, ...] = ("classification", "regression")


def _is_generator_seed(value: Any) -> bool:
    # What torch.Generator.manual_seed takes, compared exactly (a float bound lets 2**64 in).
    is_int = isinstance(value, int | np.integer) and not isinstance(value, bool)
    return is_int and 0 <= int(value) < 2**64


_GENERATOR_SEED = Satisfies(_is_generator_seed, "an int in [0, 2**64 - 1]")


@dataclass(frozen=True)
class Dataset:
    """Inputs and targets held as tensors, one sample per row.

    ``inputs`` are float32, channel-first: ``(N, D)`` tabular, ``(N, C, L)`` signals,
    ``(N, C, H, W)`` images; or int64, such as the token ids an ``nn.Embedding`` takes
    (``(N, T)`` sequences). ``targets`` are int64 class indices of shape ``(N,)`` for
    classification, or float32 of shape ``(N, num_outputs)`` for regression. The values
    are stored as given: no scaling or normalization (fit those on the training split).

    The constructor accepts tensors or NumPy arrays and settles them into that contract:
    a torch ``int32`` or ``int64`` tensor of inputs becomes int64 (token ids, what
    ``nn.Embedding`` takes: pass ``.float()`` for integer features held in such a tensor);
    all other inputs become float32 (integer NumPy arrays too: counts, pixels; pass
    ``torch.from_numpy(ids)`` for ids), and a 1-D ``(N,)`` array becomes ``(N, 1)``;
    integer or bool
    targets become int64 ``(N,)`` (an ``(N, 1)`` column is flattened); floating targets
    become float32 with ``(N,)`` turned into ``(N, 1)``, so that a regression model's
    ``(batch, 1)`` output and its targets have the same shape. NaN or infinite inputs or
    targets are refused with their count and the first sample holding one: drop those
    samples, or impute the values (with statistics of the training split), first.

    A tensor that already fits (float32 or int64 inputs, int64 targets) is kept, not
    copied: the dataset then shares memory with the caller's tensor, as
    ``torch.as_tensor`` does. NumPy arrays are always copied. :meth:`from_arrays` always
    copies.

    Args:
        inputs: ``(N, ...)`` features.
        targets: ``(N,)`` class indices or ``(N, ...)`` regression targets.

    Example:
        >>> import torch
        >>> from gradwise.data import Dataset
        >>> data = Dataset(torch.randn(5, 3), torch.tensor([0, 1, 0, 2, 1]))
        >>> len(data), data.task, data.subset([0, 2]).targets.tolist()
        (5, 'classification', [0, 0])
    """

    inputs: Tensor
    targets: Tensor

    def __post_init__(self) -> None:
        inputs = _as_inputs(self.inputs)
        targets = _as_targets(self.targets)
        if inputs.shape[0] != targets.shape[0]:
            raise ValueError(
                f"Dataset inputs and targets must have the same number of samples. Got "
                f"{inputs.shape[0]} inputs and {targets.shape[0]} targets instead."
            )
        _check_finite("inputs", inputs)
        _check_finite("targets", targets)
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "targets", targets)

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @classmethod
    def from_arrays(cls, inputs: Tensor | np.ndarray, targets: Tensor | np.ndarray) -> Dataset:
        """A dataset from tensors or NumPy arrays, copied, settled into the contract above.

        The dataset owns its memory: changing ``inputs`` or ``targets`` afterwards does
        not change it. Each array is copied once (a NumPy array by the conversion itself,
        a tensor of the right dtype by a clone), never twice.
        """
        data = cls(inputs, targets)  # type: ignore[arg-type]  # __post_init__ converts
        settled = {"inputs": data.inputs, "targets": data.targets}
        for name, given in (("inputs", inputs), ("targets", targets)):
            # A tensor that already fits the contract (float32 inputs, int64 targets) comes
            # out of the constructor as a view of the caller's storage: clone that one only.
            if isinstance(given, Tensor) and _shares_memory(settled[name], given):
                object.__setattr__(data, name, settled[name].clone())
        return data

    @property
    def task(self) -> Task:
        """``"classification"`` for int64 targets, ``"regression"`` for float targets."""
        return "regression" if self.targets.is_floating_point() else "classification"

    def subset(self, indices: Tensor | Sequence[int]) -> Dataset:
        """The samples at ``indices`` (a copy, in the order given), each in ``0..N-1``."""
        index = torch.as_tensor(indices)
        if index.numel() == 0:
            index = index.to(torch.int64)  # torch reads an empty list as float32
        # Cast to int64, a boolean mask would pick samples 0 and 1 and a float index would
        # be truncated: both silently select the wrong samples.
        if index.dtype == torch.bool or index.is_floating_point() or index.is_complex():
            raise TypeError(
                "The 'indices' parameter of Dataset.subset must hold integer sample indices. "
                f"Got dtype {index.dtype} instead; for a boolean mask pass "
                "torch.nonzero(mask).squeeze(1)."
            )
        if index.dim() != 1:
            raise ValueError(
                "The 'indices' parameter of Dataset.subset must be a 1-D sequence of ints. "
                f"Got a tensor of shape {tuple(index.shape)} instead."
            )
        # Cast before the range check: torch has no min or max for uint16..uint64. A uint8
        # array is indices too (torch's old uint8 masks do not apply here).
        unsigned = not index.dtype.is_signed
        given, index = index, index.to(torch.int64)
        if index.numel() and not 0 <= int(index.min()) <= int(index.max()) < len(self):
            # A uint64 index past 2**63 - 1 wraps to a negative int64: say the given values.
            values = given.tolist() if unsigned else [int(index.min()), int(index.max())]
            raise ValueError(
                f"The 'indices' parameter of Dataset.subset must hold indices in "
                f"0..{len(self) - 1} (the dataset has {len(self)} samples). Got indices from "
                f"{min(values)} to {max(values)} instead."
            )
        index = index.to(self.inputs.device)
        return Dataset(self.inputs.index_select(0, index), self.targets.index_select(0, index))

    def sample(self, count: int, seed: int) -> Dataset:
        """``count`` samples (all, if fewer) in the order of a permutation seeded with
        ``seed``: a subset that represents the data even when the split is ordered by
        class, the same for the same seed (the Trainer's monitoring subset, the doctor's
        checks). ``count`` is an int >= 0 and ``seed`` an int in [0, 2**64 - 1]."""
        check("count", "Dataset.sample", count, NON_NEGATIVE_INT)
        check("seed", "Dataset.sample", seed, _GENERATOR_SEED)
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(int(seed)))
        return self.subset(order[:count])

    def to(self, device: torch.device | str) -> Dataset:
        """The same samples on ``device``."""
        return Dataset(self.inputs.to(device), self.targets.to(device))


@dataclass(frozen=True)
class DataSplits:
    """The train, validation and test splits of one dataset, with what a trainer needs.

    Args:
        train: the training split.
        validation: held out from training for model selection; ``None`` for none.
        test: held out for the final score; ``None`` for none.
        num_classes: the number of classes (targets lie in ``0..num_classes-1``), or
            ``None`` for regression.
        input_shape: the shape of one sample, without ``N`` (``(1, 40)`` for mnist1d).
        task: ``"classification"`` or ``"regression"``.
        name: the dataset's name (or file path, or entry point).
        description: one line with the source and the split sizes.
        class_labels: the original label of each class index when labels were re-encoded
            (strings in a CSV file, or labels other than ``0..K-1``); ``None`` otherwise.

    The constructor checks that the splits agree with each other and with these fields.
    To build one from datasets and infer the rest, use :meth:`from_datasets`.
    """

    train: Dataset
    validation: Dataset | None
    test: Dataset | None
    num_classes: int | None
    input_shape: tuple[int, ...]
    task: Task
    name: str
    description: str
    class_labels: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(
                f"The 'task' parameter of DataSplits must be one of 'classification', "
                f"'regression'. Got {self.task!r} instead."
            )
        _check_num_classes(self.task, self.num_classes, self.class_labels)
        for split, dataset in self.splits().items():
            _check_split(self, split, dataset)

    @property
    def output_size(self) -> int:
        """Outputs a model needs: ``num_classes``, or the number of regression targets."""
        if self.num_classes is not None:
            return self.num_classes
        return int(self.train.targets[0].numel()) if len(self.train) else 1

    def splits(self) -> dict[str, Dataset]:
        """The splits that exist, by name: ``train``, then ``validation`` and ``test``."""
        named = {"train": self.train, "validation": self.validation, "test": self.test}
        return {split: dataset for split, dataset in named.items() if dataset is not None}

    @classmethod
    def from_datasets(
        cls,
        train: Dataset,
        validation: Dataset | None = None,
        test: Dataset | None = None,
        *,
        name: str = "custom",
        source: str = "user data",
    ) -> DataSplits:
        """Infer the task, the number of classes and the input shape from the splits.

        Class indices must lie in ``0..K-1``; ``num_classes`` is the largest one plus 1.

        Example:
            >>> import torch
            >>> from gradwise.data import DataSplits, Dataset
            >>> train = Dataset(torch.randn(8, 2), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
            >>> splits = DataSplits.from_datasets(train, name="toy")
            >>> splits.num_classes, splits.input_shape
            (3, (2,))
        """
        # Checked before train.task and targets.max() are read, which would fail obscurely.
        for split, dataset in (("train", train), ("validation", validation), ("test", test)):
            if not isinstance(dataset, Dataset) and (split == "train" or dataset is not None):
                raise TypeError(
                    f"The '{split}' parameter of DataSplits.from_datasets must be a "
                    f"gradwise.data.Dataset{'' if split == 'train' else ' or None'}. Got "
                    f"{type(dataset).__name__} instead; wrap arrays as Dataset(inputs, targets)."
                )
        present = [d for d in (train, validation, test) if d is not None]
        task = train.task
        num_classes = None
        if task == "classification":
            labels = [int(d.targets.max()) for d in present if len(d)]
            num_classes = max(labels, default=0) + 1
        return cls(
            train=train,
            validation=validation,
            test=test,
            num_classes=num_classes,
            input_shape=tuple(train.inputs.shape[1:]),
            task=task,
            name=name,
            description=describe(name, source, train, validation, test, num_classes),
        )


def describe(
    name: str,
    source: str,
    train: Dataset,
    validation: Dataset | None,
    test: Dataset | None,
    num_classes: int | None,
) -> str:
    """One line: ``name: source; train 3600, validation 400, test 1000; 10 classes, (1, 40)``."""
    sizes = ", ".join(
        f"{split} {len(dataset)}"
        for split, dataset in (("train", train), ("validation", validation), ("test", test))
        if dataset is not None
    )
    kind = f"{num_classes} classes" if num_classes is not None else "regression"
    shape = tuple(train.inputs.shape[1:])
    return f"{name}: {source}; {sizes}; {kind}, input {shape}"


def _shares_memory(settled: Tensor, given: Tensor) -> bool:
    if settled.numel() == 0:
        return False
    return bool(settled.untyped_storage().data_ptr() == given.untyped_storage().data_ptr())


def _as_tensor(name: str, value: Any) -> Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise TypeError(
                f"Dataset {name} must be numbers. Got a NumPy array of dtype {value.dtype} "
                "instead; encode text labels as class indices first."
            )
        # torch.tensor refuses big-endian arrays (a .npy written on such a machine, or with
        # dtype '>f4') and negative strides (np.flip, x[::-1]); this native, C-ordered copy
        # is the one copy torch.tensor would have made.
        native = np.array(value, dtype=value.dtype.newbyteorder("="), order="C")
        return torch.from_numpy(native)
    if not isinstance(value, Tensor):
        raise TypeError(
            f"Dataset {name} must be a torch.Tensor or a NumPy array. "
            f"Got {type(value).__name__} instead."
        )
    if value.is_complex():
        raise TypeError(f"Dataset {name} must be real numbers. Got dtype {value.dtype} instead.")
    return value.detach()


def _as_inputs(value: Any) -> Tensor:
    # A torch int32 or int64 tensor is what nn.Embedding indexes with: ids, kept as int64.
    # Integer NumPy arrays (counts, int16 images, np.loadtxt) and other integer tensors
    # are features, float32 as before.
    ids = isinstance(value, Tensor) and value.dtype in (torch.int32, torch.int64)
    inputs = _as_tensor("inputs", value)
    if inputs.dim() == 0:
        raise ValueError("Dataset inputs must have shape (N, ...). Got a 0-d tensor instead.")
    if inputs.dim() == 1:
        inputs = inputs.unsqueeze(1)
    return inputs.to(torch.int64 if ids else torch.float32)


def _check_finite(name: str, values: Tensor) -> None:
    """Refuse NaN and infinite values, with their count and the first sample holding one.

    One sum over the data decides (NaN or inf whenever any value is; 8 ms for 60,000 x 784
    float32 against 220 ms for isfinite().all(), on 2 busy CPU cores); only then are the
    values counted. A sum that overflows on finite data takes that slower path and passes.
    """
    if not values.is_floating_point() or values.numel() == 0:
        return
    if bool(torch.isfinite(values.sum())):
        return
    bad = ~torch.isfinite(values)
    count = int(bad.sum())
    if count == 0:
        return
    first = int(bad.reshape(values.shape[0], -1).any(dim=1).nonzero()[0, 0])
    raise ValueError(
        f"Dataset {name} must be finite. Got {count} NaN or infinite value"
        f"{'s' if count > 1 else ''} instead, the first in sample {first}; drop the samples "
        "that hold them, or impute the values (e.g. with the training split's mean), "
        "before building the Dataset."
    )


def _as_targets(value: Any) -> Tensor:
    targets = _as_tensor("targets", value)
    if targets.dim() == 0:
        raise ValueError("Dataset targets must have shape (N, ...). Got a 0-d tensor instead.")
    if targets.is_floating_point():
        return (targets.unsqueeze(1) if targets.dim() == 1 else targets).to(torch.float32)
    if targets.dim() == 2 and targets.shape[1] == 1:
        targets = targets.squeeze(1)
    if targets.dim() != 1:
        raise ValueError(
            "Dataset class-index targets must have shape (N,), one class per sample. Got "
            f"shape {tuple(targets.shape)} instead; use float targets for regression."
        )
    return targets.to(torch.int64)


def _check_num_classes(task: Task, num_classes: int | None, class_labels: Any) -> None:
    if task == "regression":
        if num_classes is not None or class_labels is not None:
            raise ValueError(
                "The 'num_classes' and 'class_labels' parameters of DataSplits must be None "
                f"for regression. Got {num_classes!r} and {class_labels!r} instead."
            )
        return
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            "The 'num_classes' parameter of DataSplits must be an int >= 1 for "
            f"classification. Got {num_classes!r} instead."
        )
    if class_labels is not None and len(class_labels) != num_classes:
        raise ValueError(
            "The 'class_labels' parameter of DataSplits must have one label per class "
            f"({num_classes}). Got {len(class_labels)} labels instead."
        )


def _check_split(splits: DataSplits, split: str, dataset: Any) -> None:
    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"The '{split}' split of DataSplits must be a gradwise.data.Dataset. "
            f"Got {type(dataset).__name__} instead."
        )
    shape = tuple(dataset.inputs.shape[1:])
    if shape != tuple(splits.input_shape):
        raise ValueError(
            f"The '{split}' split of DataSplits must have inputs of shape "
            f"{tuple(splits.input_shape)} per sample. Got {shape} instead."
        )
    if dataset.task != splits.task:
        raise ValueError(
            f"The '{split}' split of DataSplits must have {splits.task} targets "
            f"({'int64' if splits.task == 'classification' else 'float'}). "
            f"Got {dataset.targets.dtype} instead."
        )
    target_shape = tuple(dataset.targets.shape[1:])
    if target_shape != tuple(splits.train.targets.shape[1:]):
        raise ValueError(
            f"The '{split}' split of DataSplits must have targets of shape "
            f"{tuple(splits.train.targets.shape[1:])} per sample, like the train split. "
            f"Got {target_shape} instead."
        )
    if splits.num_classes is not None and len(dataset):
        low, high = int(dataset.targets.min()), int(dataset.targets.max())
        if low < 0 or high >= splits.num_classes:
            raise ValueError(
                f"The '{split}' split of DataSplits must have class indices in "
                f"0..{splits.num_classes - 1}. Got labels from {low} to {high} instead."
            )
