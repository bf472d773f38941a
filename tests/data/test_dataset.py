"""Dataset and DataSplits: the tensor contract, subsets, and consistency checks."""

import dataclasses

import numpy as np
import pytest
import torch

from gradwise.data import Batches, Dataset, DataSplits, iterate_once


def test_classification_contract_from_numpy():
    data = Dataset.from_arrays(np.ones((4, 3), dtype=np.float64), np.array([0, 1, 1, 2], np.int32))
    assert data.inputs.dtype == torch.float32
    assert data.targets.dtype == torch.int64
    assert data.task == "classification"
    assert len(data) == 4


def test_shapes_are_settled():
    # (N,) inputs become one feature; (N, 1) class labels become (N,); float targets (N, 1).
    data = Dataset(torch.arange(5), torch.arange(5).reshape(5, 1))
    assert data.inputs.shape == (5, 1)
    assert data.inputs.dtype == torch.int64  # integer inputs stay integer (token ids)
    assert Dataset(torch.arange(5.0), torch.arange(5)).inputs.dtype == torch.float32
    assert data.targets.shape == (5,)
    regression = Dataset(torch.zeros(5, 2), torch.linspace(0, 1, 5, dtype=torch.float64))
    assert regression.targets.shape == (5, 1)
    assert regression.targets.dtype == torch.float32
    assert regression.task == "regression"
    multi = Dataset(torch.zeros(5, 2), torch.zeros(5, 3))
    assert multi.targets.shape == (5, 3)


def test_images_keep_channel_first_shape_and_raw_values():
    images = torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8)
    data = Dataset(images, torch.zeros(6, dtype=torch.int64))
    assert data.inputs.shape == (6, 1, 4, 4)
    assert torch.equal(data.inputs, images.float())


def test_dataset_is_frozen_and_detached():
    weights = torch.ones(3, 2, requires_grad=True)
    data = Dataset(weights * 2, torch.zeros(3, dtype=torch.int64))
    assert not data.inputs.requires_grad
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.inputs = torch.zeros(3, 2)


def test_flipped_and_big_endian_numpy_arrays_are_accepted():
    # np.flip gives negative strides and '>f8' is a big-endian dtype: torch.tensor refuses
    # both. The oracle is the same values read from plain native copies.
    images = np.random.default_rng(0).normal(size=(4, 1, 3, 3))
    labels = np.array([2, 0, 1, 1])
    flipped = Dataset.from_arrays(np.flip(images, axis=3), labels[::-1])
    assert torch.equal(flipped.inputs, torch.tensor(np.flip(images, axis=3).copy()).float())
    assert flipped.targets.tolist() == [1, 1, 0, 2]
    swapped = Dataset.from_arrays(images.astype(">f8"), labels.astype(">i4"))
    assert torch.equal(swapped.inputs, torch.tensor(images).float())
    assert swapped.targets.tolist() == labels.tolist()
    regression = Dataset.from_arrays(images.astype(">f4"), labels.astype(">f8"))
    assert regression.targets[:, 0].tolist() == [2.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("inputs", "targets"),
    [
        # Already in the contract's dtypes: the constructor keeps such tensors as they are.
        (torch.zeros(4, 3), torch.tensor([0, 1, 1, 0])),
        (torch.zeros(4), torch.zeros(4)),  # (N,) views become (N, 1)
        (torch.zeros(4, 3), torch.zeros(4, 1, dtype=torch.int64)),  # (N, 1) labels squeezed
        (np.zeros((4, 3), np.float32), np.array([0, 1, 1, 0], np.int64)),
        (np.zeros((4, 3), np.float64), np.zeros(4, np.float32)),
    ],
    ids=["tensors", "1-d tensors", "label column", "numpy float32", "numpy float64"],
)
def test_from_arrays_copies_the_callers_data(inputs, targets):
    data = Dataset.from_arrays(inputs, targets)
    inputs[0] = 7  # the caller reuses its buffers, as a data-generating loop does
    targets[0] = 1
    assert float(data.inputs.abs().sum()) == 0.0
    assert data.targets.flatten().tolist()[0] == 0


def test_the_constructor_keeps_a_tensor_that_already_fits():
    # Documented: no copy for float32 inputs and int64 targets (subset and to() rely on it).
    inputs, targets = torch.zeros(4, 3), torch.tensor([0, 1, 1, 0])
    data = Dataset(inputs, targets)
    assert data.inputs.data_ptr() == inputs.data_ptr()
    assert data.targets.data_ptr() == targets.data_ptr()


def test_subset_indexes_in_the_given_order():
    data = Dataset(torch.arange(10.0).reshape(5, 2), torch.tensor([0, 1, 2, 3, 4]))
    picked = data.subset([4, 0, 2])
    assert picked.targets.tolist() == [4, 0, 2]
    assert picked.inputs[:, 0].tolist() == [8.0, 0.0, 4.0]
    assert len(data.subset(torch.tensor([], dtype=torch.int64))) == 0
    with pytest.raises(ValueError, match=r"'indices' parameter of Dataset.subset must be a 1-D"):
        data.subset(torch.zeros(2, 2, dtype=torch.int64))


@pytest.mark.parametrize(
    "indices",
    [
        torch.tensor([True, False, True, False, False]),  # a mask: cast, it picked 1, 0, 1, ...
        np.array([False, False, False, True, True]),
        [True, False],
        torch.tensor([3.0, 4.0]),  # floats: truncated silently
        np.array([0.5]),
    ],
)
def test_subset_refuses_masks_and_fractional_indices(indices):
    data = Dataset(torch.arange(10.0).reshape(5, 2), torch.tensor([0, 1, 2, 3, 4]))
    with pytest.raises(TypeError, match=r"must hold integer sample indices. Got dtype torch\."):
        data.subset(indices)
    mask = torch.as_tensor(indices)
    if mask.dtype == torch.bool and len(mask) == len(data):  # the fix the message prescribes
        assert data.subset(torch.nonzero(mask).squeeze(1)).targets.tolist() == [
            i for i in range(5) if mask[i]
        ]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64])
def test_subset_takes_unsigned_numpy_indices_as_indices(dtype):
    # torch has no min/max for uint16..uint64 (b99b896 raised NotImplementedError), and a
    # uint8 array is indices here, not a mask: [1, 0, 1] picks samples 1, 0, 1.
    data = Dataset(torch.arange(10.0).reshape(5, 2), torch.tensor([0, 1, 2, 3, 4]))
    assert data.subset(np.array([1, 0, 1], dtype=dtype)).targets.tolist() == [1, 0, 1]
    assert data.subset(np.array([4, 3], dtype=dtype)).inputs[:, 0].tolist() == [8.0, 6.0]
    with pytest.raises(ValueError, match=r"indices in 0..4 .* Got indices from 0 to 5 instead"):
        data.subset(np.array([0, 5], dtype=dtype))


def test_subset_says_the_true_range_of_uint64_indices_past_int64():
    data = Dataset(torch.arange(10.0).reshape(5, 2), torch.tensor([0, 1, 2, 3, 4]))
    with pytest.raises(ValueError, match=rf"Got indices from 3 to {2**64 - 1} instead"):
        data.subset(np.array([2**64 - 1, 3], dtype=np.uint64))  # would wrap to -1 as int64


@pytest.mark.parametrize(("indices", "low", "high"), [([0, 5], 0, 5), ([-1, 2], -1, 2)])
def test_subset_out_of_range_says_the_valid_range(indices, low, high):
    data = Dataset(torch.arange(10.0).reshape(5, 2), torch.tensor([0, 1, 2, 3, 4]))
    with pytest.raises(
        ValueError,
        match=rf"indices in 0..4 \(the dataset has 5 samples\). Got indices from "
        rf"{low} to {high} instead",
    ):
        data.subset(indices)


@pytest.mark.parametrize(
    ("inputs", "targets", "error", "match"),
    [
        (
            torch.zeros(3, 2),
            torch.zeros(4, dtype=torch.int64),
            ValueError,
            "Got 3 inputs and 4 targets",
        ),
        (
            [[1.0, 2.0]],
            torch.zeros(1),
            TypeError,
            "must be a torch.Tensor or a NumPy array. Got list",
        ),
        (
            np.array([["a"]]),
            np.zeros(1),
            TypeError,
            "must be numbers. Got a NumPy array of dtype <U1",
        ),
        (torch.zeros(2, dtype=torch.complex64), torch.zeros(2), TypeError, "must be real numbers"),
        (torch.tensor(1.0), torch.zeros(1), ValueError, "inputs must have shape"),
        (
            torch.zeros(2, 1),
            torch.zeros(2, 2, dtype=torch.int64),
            ValueError,
            "must have shape \\(N,\\), one class",
        ),
    ],
)
def test_dataset_errors(inputs, targets, error, match):
    with pytest.raises(error, match=match):
        Dataset(inputs, targets)


def _splits(**changes):
    fields = {
        "train": Dataset(torch.zeros(4, 2), torch.tensor([0, 1, 2, 1])),
        "validation": None,
        "test": Dataset(torch.zeros(2, 2), torch.tensor([2, 0])),
        "num_classes": 3,
        "input_shape": (2,),
        "task": "classification",
        "name": "toy",
        "description": "toy",
    }
    return DataSplits(**{**fields, **changes})


def test_data_splits_accessors():
    splits = _splits()
    assert list(splits.splits()) == ["train", "test"]
    assert splits.output_size == 3


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"task": "ranking"}, ValueError, "'task' parameter of DataSplits must be one of"),
        (
            {"num_classes": 0},
            ValueError,
            "'num_classes' parameter of DataSplits must be an int >= 1",
        ),
        (
            {"num_classes": 2},
            ValueError,
            r"must have class indices in 0..1. Got labels from 0 to 2",
        ),
        (
            {"input_shape": (3,)},
            ValueError,
            r"'train' split of DataSplits must have inputs of shape \(3,\)",
        ),
        ({"class_labels": ("a", "b")}, ValueError, "one label per class \\(3\\)"),
        (
            {"validation": (torch.zeros(1, 2), torch.zeros(1))},
            TypeError,
            "'validation' split .* Got tuple",
        ),
        (
            {"test": Dataset(torch.zeros(2, 2), torch.zeros(2))},
            ValueError,
            "'test' split of DataSplits must have classification targets",
        ),
        ({"task": "regression"}, ValueError, "must be None for regression"),
    ],
)
def test_data_splits_consistency_errors(changes, error, match):
    with pytest.raises(error, match=match):
        _splits(**changes)


def test_regression_target_shapes_must_agree():
    train = Dataset(torch.zeros(4, 2), torch.zeros(4, 2))
    test = Dataset(torch.zeros(2, 2), torch.zeros(2, 3))
    with pytest.raises(
        ValueError, match=r"'test' split of DataSplits must have targets of shape \(2,\)"
    ):
        DataSplits.from_datasets(train, test=test)


def test_from_datasets_infers_the_rest():
    train = Dataset(torch.zeros(6, 1, 5), torch.tensor([0, 1, 0, 1, 0, 1]))
    test = Dataset(torch.zeros(3, 1, 5), torch.tensor([4, 0, 1]))
    splits = DataSplits.from_datasets(train, test=test, name="signals", source="my lab")
    assert splits.num_classes == 5  # the largest label in any split, plus one
    assert splits.input_shape == (1, 5)
    assert splits.task == "classification"
    assert splits.description == "signals: my lab; train 6, test 3; 5 classes, input (1, 5)"
    regression = DataSplits.from_datasets(Dataset(torch.zeros(3, 2), torch.zeros(3, 4)))
    assert regression.num_classes is None
    assert regression.output_size == 4


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        (
            {"train": (torch.zeros(3, 2), torch.zeros(3, dtype=torch.int64))},
            r"'train' parameter of DataSplits.from_datasets must be a gradwise.data.Dataset. "
            r"Got tuple instead; wrap arrays as Dataset\(inputs, targets\)",
        ),
        ({"train": None}, r"'train' parameter .* must be a gradwise.data.Dataset. Got NoneType"),
        (
            {"test": [1, 2]},
            r"'test' parameter .* must be a gradwise.data.Dataset or None. Got list",
        ),
        ({"validation": np.zeros(3)}, r"'validation' parameter .* or None. Got ndarray"),
    ],
)
def test_from_datasets_needs_datasets(arguments, match):
    train = Dataset(torch.zeros(3, 2), torch.tensor([0, 1, 0]))
    with pytest.raises(TypeError, match=match):
        DataSplits.from_datasets(**{"train": train, **arguments})


def test_sample_is_a_seeded_permutation_prefix_and_takes_all_when_asked_for_more():
    data = Dataset(torch.arange(10.0).unsqueeze(1), torch.arange(10) % 2)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    four = data.sample(4, seed=3)
    assert torch.equal(four.inputs[:, 0], order[:4].double().to(four.inputs.dtype))
    assert torch.equal(data.sample(4, seed=3).inputs, four.inputs)
    assert not torch.equal(data.sample(4, seed=4).inputs, four.inputs)
    assert sorted(data.sample(50, seed=0).inputs[:, 0].tolist()) == list(range(10))


@pytest.mark.parametrize(
    ("count", "seed", "match"),
    [
        (-1, 0, r"'count' parameter of Dataset.sample must be an int >= 0. Got -1 instead"),
        (2.5, 0, r"'count' parameter of Dataset.sample must be an int >= 0. Got 2.5 instead"),
        (3, -1, r"'seed' parameter of Dataset.sample must be an int in \[0, 2\*\*64 - 1\]"),
        (3, 2**64, r"'seed' parameter of Dataset.sample must be an int in \[0, 2\*\*64 - 1\]"),
        (3, 1.5, r"'seed' parameter of Dataset.sample must be an int"),
    ],
)
def test_sample_checks_its_arguments(count, seed, match):
    # A negative count used to slice the permutation from the end: 9 of 10 samples for -1.
    data = Dataset(torch.arange(10.0).unsqueeze(1), torch.arange(10) % 2)
    with pytest.raises(ValueError, match=match):
        data.sample(count, seed)


def test_integer_inputs_stay_integer_and_feed_an_embedding():
    # Token ids were cast to float32, and nn.Embedding refuses float indices.
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 10, (12, 5), generator=generator, dtype=torch.int32)
    labels = torch.arange(12) % 3
    data = Dataset(ids, labels)
    assert data.inputs.dtype == torch.int64
    assert torch.equal(data.inputs, ids.long())
    assert Dataset.from_arrays(ids, labels).inputs.dtype == torch.int64
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Embedding(10, 4), torch.nn.Flatten(), torch.nn.Linear(20, 3)
    )
    splits = DataSplits.from_datasets(data.subset(range(8)), test=data.subset(range(8, 12)))
    batches = [inputs for inputs, _ in Batches(splits.train, batch_size=3, seed=0).epoch(0)]
    batches += [inputs for inputs, _ in iterate_once(splits.test, batch_size=3)]
    assert all(batch.dtype == torch.int64 for batch in batches)
    for inputs in batches:
        assert model(inputs).shape == (len(inputs), 3)
    # Floating, bool and other integer (pixel) tensors are features: float32, as before.
    for dtype in (torch.float64, torch.bool, torch.uint8, torch.int16):
        assert Dataset(ids.to(dtype), labels).inputs.dtype == torch.float32


def test_integer_numpy_inputs_are_features() -> None:
    # Integer NumPy arrays (counts, np.loadtxt(dtype=int), int16 images) are features, as
    # before ids were kept: an nn.Linear takes them (kept as int64, they failed there with
    # "mat1 and mat2 must have the same dtype").
    counts = np.random.default_rng(0).integers(0, 10, size=(12, 4))
    for data in (
        Dataset(counts, np.arange(12) % 3),
        Dataset.from_arrays(counts, np.arange(12) % 3),
    ):
        assert data.inputs.dtype == torch.float32
        assert torch.equal(data.inputs, torch.from_numpy(counts).float())
        assert torch.nn.Linear(4, 3)(data.inputs).shape == (12, 3)


@pytest.mark.parametrize(
    ("inputs", "targets", "match"),
    [
        (
            torch.tensor([[0.0, 1.0], [2.0, float("nan")], [float("inf"), 0.0]]),
            torch.tensor([0, 1, 0]),
            r"Dataset inputs must be finite. Got 2 NaN or infinite values instead, the first "
            r"in sample 1; drop the samples that hold them, or impute the values",
        ),
        (
            np.zeros((3, 2)),
            np.array([0.5, 1.0, -np.inf]),
            r"Dataset targets must be finite. Got 1 NaN or infinite value instead, the first "
            r"in sample 2",
        ),
    ],
)
def test_non_finite_inputs_and_targets_are_refused(inputs, targets, match):
    with pytest.raises(ValueError, match=match):
        Dataset(inputs, targets)
    with pytest.raises(ValueError, match=match):
        Dataset.from_arrays(inputs, targets)


def test_finite_values_whose_sum_overflows_pass():
    huge = torch.full((4, 2), 3e38)  # float32 sum is inf; every value is finite
    assert len(Dataset(huge, torch.zeros(4))) == 4
