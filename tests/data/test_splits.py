"""Seeded, stratified splits: sizes, class proportions, determinism, independence of streams."""

import pytest
import torch

from gradwise.data import Dataset, load_dataset, split_dataset


def _tagged(targets: torch.Tensor) -> Dataset:
    """Sample i carries i as its only input, so every split can be traced to its sources."""
    return Dataset(torch.arange(len(targets), dtype=torch.float32), targets)


def _ids(dataset: Dataset) -> list[int]:
    return dataset.inputs[:, 0].long().tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.77])
def test_stratified_hold_out_sizes_and_proportions(seed, fraction):
    # Uneven classes, including a class of one sample.
    sizes = [37, 5, 1, 120, 18]
    targets = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    targets = targets[torch.randperm(len(targets), generator=torch.Generator().manual_seed(9))]
    rest, held_out = split_dataset(_tagged(targets), fraction, seed=seed)
    total = len(targets)
    assert len(held_out) == int(fraction * total + 0.5)
    # Every sample lands in exactly one split, each split in the original order.
    assert sorted(_ids(rest) + _ids(held_out)) == list(range(total))
    assert _ids(rest) == sorted(_ids(rest))
    assert _ids(held_out) == sorted(_ids(held_out))
    for c, n in enumerate(sizes):
        held = int((held_out.targets == c).sum())
        assert abs(held - fraction * n) < 1, (c, held, fraction * n)
    # The sample's target travels with it.
    assert torch.equal(held_out.targets, targets[held_out.inputs[:, 0].long()])


def test_same_seed_same_split_different_seed_different():
    targets = torch.arange(200) % 4
    first = split_dataset(_tagged(targets), 0.3, seed=5)[1]
    again = split_dataset(_tagged(targets), 0.3, seed=5)[1]
    other = split_dataset(_tagged(targets), 0.3, seed=6)[1]
    assert _ids(first) == _ids(again)
    assert _ids(first) != _ids(other)


def test_regression_hold_out_is_a_plain_seeded_draw():
    data = Dataset(torch.arange(100.0), torch.linspace(0, 1, 100))
    rest, held_out = split_dataset(data, 0.2, seed=0)
    assert (len(rest), len(held_out)) == (80, 20)
    assert held_out.targets.shape == (20, 1)
    assert sorted(_ids(rest) + _ids(held_out)) == list(range(100))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fraction": 0.0}, r"'fraction' parameter of split_dataset must be a float in \(0, 1\)"),
        ({"fraction": 1.0}, r"'fraction' parameter of split_dataset must be a float in \(0, 1\)"),
        ({"fraction": 0.5, "seed": -1}, r"'seed' parameter of split_dataset must be an int"),
        ({"fraction": 0.01}, r"cannot hold out 0.01 of 10 samples: one split would be empty"),
    ],
)
def test_split_dataset_errors(kwargs, match):
    data = _tagged(torch.arange(10) % 2)
    with pytest.raises(ValueError, match=match):
        split_dataset(data, **kwargs)


def test_split_dataset_needs_non_negative_labels():
    with pytest.raises(ValueError, match="class indices >= 0"):
        split_dataset(_tagged(torch.tensor([-1, 0, 1, 0])), 0.5)


def test_split_dataset_needs_a_dataset():
    with pytest.raises(TypeError, match="must be a gradwise.data.Dataset. Got tuple"):
        split_dataset((torch.zeros(4, 1), torch.zeros(4)), 0.5)


def test_load_dataset_splits_are_stratified_on_both_levels():
    splits = load_dataset("digits", validation_split=0.15, test_split=0.25, seed=3)
    train, validation, test = splits.train, splits.validation, splits.test
    every = torch.cat([train.targets, validation.targets, test.targets])
    assert len(test) == int(0.25 * len(every) + 0.5)
    remainder = len(train) + len(validation)
    assert len(validation) == int(0.15 * remainder + 0.5)
    for c in range(10):
        n = int((every == c).sum())
        n_test = int((test.targets == c).sum())
        n_validation = int((validation.targets == c).sum())
        assert abs(n_test - 0.25 * n) < 1
        assert abs(n_validation - 0.15 * (n - n_test)) < 1


def test_load_dataset_same_seed_identical_different_seed_different():
    a = load_dataset("moons", seed=11)
    b = load_dataset("moons", seed=11)
    c = load_dataset("moons", seed=12)
    for split in ("train", "validation", "test"):
        assert torch.equal(getattr(a, split).inputs, getattr(b, split).inputs)
        assert torch.equal(getattr(a, split).targets, getattr(b, split).targets)
        assert not torch.equal(getattr(a, split).inputs, getattr(c, split).inputs)


def test_real_data_splits_depend_on_the_seed_only():
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=0)
    c = load_dataset("digits", seed=1)
    assert torch.equal(a.test.inputs, b.test.inputs)
    assert torch.equal(a.validation.inputs, b.validation.inputs)
    assert not torch.equal(a.test.inputs, c.test.inputs)


def test_validation_split_does_not_change_the_test_split():
    a = load_dataset("digits", validation_split=0.1, seed=4)
    b = load_dataset("digits", validation_split=0.3, seed=4)
    assert torch.equal(a.test.inputs, b.test.inputs)
    assert torch.equal(a.test.targets, b.test.targets)


def test_zero_fractions_give_no_split():
    splits = load_dataset("xor", validation_split=0, test_split=0)
    assert splits.validation is None
    assert splits.test is None
    assert len(splits.train) == 1000
    assert list(splits.splits()) == ["train"]
    assert "validation" not in splits.description
    mnist1d = load_dataset("mnist1d", validation_split=0)
    assert mnist1d.validation is None
    assert len(mnist1d.train) == 4000


def test_regression_load_dataset_split_sizes():
    splits = load_dataset("sine", num_samples=500, validation_split=0.2, test_split=0.2)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (320, 80, 100)
